"""The figures a benchmark reports: which accuracy and efficiency numbers, and their means over
seeds (shared by the JSON report, the Markdown tables and the plots)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ahcl.eval.metrics import PRCurve, RetrievalReport

# (key in the table, title, how to read it from a cell's metrics)
ACCURACY = (
    ("map", "mAP@all", lambda m: m["map"]),
    ("map_at_100", "mAP@100", lambda m: m["map_at"]["100"]),
    ("p_at_10", "P@10", lambda m: m["precision_at"]["10"]),
    ("p_radius_2", "Precision within Hamming radius 2", lambda m: m["precision_at_radius"]),
    ("map_tie_aware", "mAP@all, tie-aware (expected over orders of tied items)",
     lambda m: m["map_tie_aware"]),
)
EFFICIENCY = ("train_s", "db_codes_s", "db_codes_head_s", "query_s_per_image",
              "query_head_s_per_image")


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single seed)."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def summarise(cells: list[dict[str, Any]], methods: list[str], bits: list[int]) -> dict[str, Any]:
    """Mean ± std over seeds of every accuracy figure, and efficiency means, per method × bits."""
    out: dict[str, Any] = {}
    for name in methods:
        out[name] = {}
        for b in bits:
            group = [c for c in cells if c["method"] == name and c["n_bits"] == b]
            if not group:
                continue
            entry: dict[str, Any] = {"seeds": [c["seed"] for c in group]}
            for key, _, read in ACCURACY:
                mean, std = _mean_std([read(c["metrics"]) for c in group])
                entry[key] = {"mean": mean, "std": std}
            for key in EFFICIENCY:
                entry[key] = _mean_std([c["timings"][key] for c in group])[0]
            near = near_duplicate_summary(group)
            if near is not None:
                entry["near_duplicates"] = near
            peaks = [c["memory"]["peak_rss_mib"] for c in group]
            extras = [c["memory"]["extra_rss_mib"] for c in group]
            entry["peak_rss_mib"] = max(peaks) if None not in peaks else None
            entry["extra_rss_mib"] = max(extras) if None not in extras else None
            out[name][str(b)] = entry
    return out


def clipped_k(k: int, n_db: int) -> str:
    """The key of recall@``k`` in a near-duplicate report of ``n_db`` database items (the report
    clips each cut-off to the database size)."""
    return str(min(int(k), int(n_db)))


def near_duplicate_summary(group: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Mean ± std over the seeds of ``group`` of the near-duplicate recall@k (the cut-offs of the
    cells, as strings: those above the database size are clipped to it) and mean rank; None
    when a cell has no near-duplicate figures (the protocol was off)."""
    reports = [c.get("near_duplicates") for c in group]
    if not reports or None in reports:
        return None
    ks = [k for k in reports[0]["recall_at"] if all(k in r["recall_at"] for r in reports)]
    recall = {}
    for k in ks:
        mean, std = _mean_std([r["recall_at"][k] for r in reports])
        recall[k] = {"mean": mean, "std": std}
    mean, std = _mean_std([r["mean_rank"] for r in reports])
    return {"n": int(reports[0]["n"]), "recall_at": recall,
            "mean_rank": {"mean": mean, "std": std}}


def mean_report(dicts: list[dict[str, Any]]) -> RetrievalReport:
    """A :class:`RetrievalReport` whose curves are the means of several reports' (for plots)."""
    first = dicts[0]

    def avg(get) -> np.ndarray:
        return np.mean([np.asarray(get(d), dtype=np.float64) for d in dicts], axis=0)

    curve = PRCurve(np.asarray(first["pr_curve"]["radius"]),
                    avg(lambda d: d["pr_curve"]["precision"]), avg(lambda d: d["pr_curve"]["recall"]))
    return RetrievalReport(
        map=float(avg(lambda d: d["map"])), map_tie_aware=float(avg(lambda d: d["map_tie_aware"])),
        map_at={int(k): float(avg(lambda d: d["map_at"][k])) for k in first["map_at"]},
        precision_at={int(k): float(avg(lambda d: d["precision_at"][k]))
                      for k in first["precision_at"]},
        recall_at={int(k): float(avg(lambda d: d["recall_at"][k])) for k in first["recall_at"]},
        pr_curve=curve, precision_at_radius=float(avg(lambda d: d["precision_at_radius"])),
        radius=int(first["radius"]), n_queries=int(first["n_queries"]), n_db=int(first["n_db"]),
        n_bits=int(first["n_bits"]),
        n_queries_without_relevant=int(first["n_queries_without_relevant"]),
        precision_curve_ks=list(first["precision_curve_ks"]),
        precision_curve=[float(p) for p in avg(lambda d: d["precision_curve"])])
