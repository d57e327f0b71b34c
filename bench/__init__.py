"""Benchmarks of the converted MobileFaceNet artifacts.

`python cli.py bench` runs every artifact in a converter output folder side
by side on this machine (`bench.host`), or on an Android phone over adb
(`bench.android`), and writes the same table, CSV and chart for both
(`bench.report`). The standalone scripts in this folder
(`data_pipeline.py`, `eval_speed.py`, `mxnet_reference.py`) are run by
path and do not import this package.
"""
