"""Evaluation of binary codes: retrieval metrics and plots. numpy only (no torch)."""

from ahcl.eval.metrics import EvaluationError, PRCurve, RetrievalReport, evaluate
from ahcl.eval.near_duplicates import (NearDuplicateReport, near_duplicate_ranks,
                                       near_duplicate_report)

__all__ = ["EvaluationError", "NearDuplicateReport", "PRCurve", "RetrievalReport", "evaluate",
           "near_duplicate_ranks", "near_duplicate_report"]
