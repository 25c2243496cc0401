"""The benchmark of every method on one split: runner (resumable cells) and report."""

from ahcl.bench.runner import BUDGETS, BenchmarkConfig, run_benchmark

__all__ = ["BUDGETS", "BenchmarkConfig", "run_benchmark"]
