"""``ahcl evaluate``: retrieval quality of a run on its queries or a labelled folder."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ahcl.cli._common import add_device_args, check_output_folder, print_json, run_options
from ahcl.errors import AhclError
from ahcl.eval.metrics import RetrievalReport
from ahcl.eval.near_duplicates import NearDuplicateReport
from ahcl.eval.plots import plot_pr_curve, plot_precision_at_k
from ahcl.run import load_run


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="mAP, precision and recall of a run",
                       description="Evaluate a run on its own held-out queries or a folder of "
                                   "labelled query images (class names matched to the run's).")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--queries", metavar="DIR", help="folder-per-class query images")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument("--plots", metavar="DIR", help="write PR and precision@K plots here")
    p.add_argument("--near-duplicates", type=int, metavar="N", default=0,
                   help="also alter N database images (seeded crop, quarter turn, brightness, "
                        "JPEG) and report where each one's source ranks: recall@1/10/100, mean "
                        "rank")
    p.add_argument("--seed", type=int, default=0, help="seed of the near-duplicate protocol")
    add_device_args(p)
    p.set_defaults(func=run)


def format_report(report: RetrievalReport, semantic_bits: int | None = None) -> str:
    """A short human-readable summary of a RetrievalReport."""
    split = (f" ({semantic_bits} semantic + {report.n_bits - semantic_bits} instance)"
             if semantic_bits is not None and semantic_bits != report.n_bits else "")
    lines = [f"queries {report.n_queries}  database {report.n_db}  bits {report.n_bits}{split}",
             f"mAP            {report.map:.4f}",
             f"mAP tie-aware  {report.map_tie_aware:.4f}"]
    lines += [f"mAP@{k:<11}{v:.4f}" for k, v in sorted(report.map_at.items())]
    lines += [f"P@{k:<13}{v:.4f}" for k, v in sorted(report.precision_at.items())]
    lines.append(f"P(r<=2)        {report.precision_at_radius:.4f}")
    if report.n_queries_without_relevant:
        lines.append(f"queries without any relevant item: {report.n_queries_without_relevant} "
                     "(counted with AP 0)")
    return "\n".join(lines)


def format_near_duplicates(near: NearDuplicateReport) -> str:
    """The near-duplicate protocol's summary lines."""
    recalls = "  ".join(f"R@{k} {v:.3f}" for k, v in sorted(near.recall_at.items()))
    return (f"near-duplicates {near.n}: {recalls}  mean rank {near.mean_rank:.1f}  "
            f"median {near.median_rank:g}")


def run(args: argparse.Namespace) -> int:
    check_output_folder(args.plots, "--plots")
    if args.near_duplicates < 0:
        raise AhclError(f"--near-duplicates must be >= 0, got {args.near_duplicates}")
    r = load_run(args.run, **run_options(args))
    tic = time.perf_counter()
    report = r.evaluate(args.queries)
    near = r.near_duplicates(args.near_duplicates, seed=args.seed) if args.near_duplicates \
        else None
    seconds = time.perf_counter() - tic
    if args.plots:
        out = Path(args.plots)
        name = f"{r.method} {r.n_bits} bits"
        plot_pr_curve({name: report}, out / "pr_curve.png")
        plot_precision_at_k({name: report}, out / "precision_at_k.png")
    if args.json:
        extra = {"near_duplicates": near.to_dict()} if near is not None else {}
        print_json({**report.to_dict(), "semantic_bits": r.semantic_bits,
                    "instance_bits": r.instance_bits, **extra, "seconds": seconds})
    else:
        print(format_report(report, r.semantic_bits))
        if near is not None:
            print(format_near_duplicates(near))
        if args.plots:
            print(f"plots written to {args.plots}")
    return 0
