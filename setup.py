"""mfn-tf: MobileFaceNet in Keras 3, trained with insightface's recipe and
converted to TFLite, ONNX and ncnn."""

from setuptools import find_packages, setup

setup(
    name="mfn-tf",
    version="0.1.0",
    description=(
        "MobileFaceNet face recognition in Keras 3: insightface training "
        "recipe, MXNet checkpoint import, TFLite/ONNX/ncnn export"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(
        include=[
            "mfn_tf",
            "mfn_tf.*",
            "converters",
            "converters.*",
            "bench",
            "bench.*",
            "recipes",
        ]
    ),
    py_modules=["cli"],
    include_package_data=True,
    package_data={"": ["*.toml", "*.sh"]},
    install_requires=[
        "tensorflow>=2.16,<2.22",
        # TensorFlow no longer pulls it in; tf.summary (the TensorBoard
        # callback) needs it.
        "tensorboard",
        "keras>=3.3,<3.16",
        "numpy",
        "pillow",
        "click>=8",
        "matplotlib",
        "tqdm",
    ],
    extras_require={
        # TFLite, ONNX and ncnn export and their runtimes for parity checks.
        # pnnx is installed with --no-deps because it declares torch
        # (see the Makefile).
        "convert": [
            "tf2onnx>=1.16",
            "onnx",
            "onnxruntime",
            "onnxslim",
            "ai-edge-litert",
            "ncnn",
            "tf-keras",
            "tensorflow-model-optimization>=0.8",
        ],
        "test": ["pytest>=7"],
    },
    entry_points={"console_scripts": ["mfn-tf=cli:main"]},
)
