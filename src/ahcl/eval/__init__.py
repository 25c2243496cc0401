"""Evaluation of binary codes: retrieval metrics and plots. numpy only (no torch)."""

from ahcl.eval.metrics import EvaluationError, PRCurve, RetrievalReport, evaluate

__all__ = ["EvaluationError", "PRCurve", "RetrievalReport", "evaluate"]
