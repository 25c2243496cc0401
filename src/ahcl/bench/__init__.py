"""The benchmark of every method on one split: runner (resumable cells) and report."""

from ahcl.bench.config import BenchmarkConfig
from ahcl.bench.runner import run_benchmark

__all__ = ["BenchmarkConfig", "run_benchmark"]
