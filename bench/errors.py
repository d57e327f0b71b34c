"""Errors raised by the benchmarks; the CLI shows their message and exits."""


class BenchmarkError(RuntimeError):
    """A benchmark that cannot run or produced no usable measurement."""


class ToolOutputError(BenchmarkError):
    """A benchmark tool's output that reports an error or lacks a result."""


class AdbError(BenchmarkError):
    """An adb step that failed: no device, a failed push, a failed run."""
