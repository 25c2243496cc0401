"""``ahcl demo``: the README's main job."""

from __future__ import annotations

import argparse
import sys

from ahcl.cli._common import add_device_args, print_json
from ahcl.demo import format_table, run_demo
from ahcl.errors import AhclError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train and evaluate AHCL at several code lengths, with a report",
                       description="Train AHCL at each code length on UC Merced (cache, else "
                                   "download; synthetic scenes when neither works), evaluate, "
                                   "and write a report with plots.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", metavar="NAME", help="registered dataset (default ucmerced)")
    src.add_argument("--data", metavar="DIR", help="folder with one sub-folder per class")
    p.add_argument("--bits", default="16,32,64", help="comma-separated code lengths")
    p.add_argument("--out", default="ahcl-demo", metavar="DIR", help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    add_device_args(p, workers=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        bits = [int(b) for b in args.bits.split(",") if b.strip()]
    except ValueError:
        raise AhclError(f"--bits takes comma-separated integers, got {args.bits!r}") from None

    def say(line: str) -> None:
        print(f"ahcl demo: {line}", file=sys.stderr)

    result = run_demo(args.out, bits=bits, data=args.data, dataset=args.dataset, seed=args.seed,
                      say=say, device=args.device or "auto",
                      precision=args.precision or "auto")
    if args.json:
        print_json({"out": str(result.out), "data": result.data_note,
                    "backbone": result.backbone_note, "rows": result.rows,
                    "report": str(result.report)})
        return 0
    best = result.rows[len(result.rows) // 2]["run"] if result.rows else ""
    print(f"data: {result.data_note}\nbackbone: {result.backbone_note}\n")
    print(format_table(result.rows))
    print(f"\nreport: {result.report}")
    print(f"search: ahcl search {best} IMAGE [-k 10]")
    print(f"serve:  ahcl serve {best}   (then open http://127.0.0.1:8000/)")
    return 0
