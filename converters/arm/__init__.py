"""Checks of converted models on emulated aarch64 CPUs (QEMU user mode).

`python cli.py verify-arm` runs each TFLite and ncnn artifact of a
conversion on ARM code paths (NEON, fp16 arithmetic) without a phone; see
docs/arm_verification.md.
"""
