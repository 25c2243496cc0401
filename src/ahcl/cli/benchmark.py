"""``ahcl benchmark``: every method × bits × seed on one split, with a report."""

from __future__ import annotations

import argparse
import shlex
from typing import Any, Callable

import torch

from ahcl.bench import BenchmarkConfig, run_benchmark
from ahcl.bench.summary import clipped_k
from ahcl.cli._common import add_device_args, run_options
from ahcl.config import parse_set
from ahcl.errors import AhclError
from ahcl.methods.registry import list_methods

NEAR_DUPLICATES = BenchmarkConfig.near_duplicates  # the library's default


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") \
            from None


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="compare hashing methods on one split and write a report",
                       description="Train every method at every code length and seed on one "
                       "split (features extracted once), then write results.json, results.md "
                       "and plots. Rerunning with the same --out resumes.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="DIR", help="folder with one sub-folder per class")
    src.add_argument("--dataset", metavar="NAME", help="registered dataset (ahcl datasets list)")
    p.add_argument("--methods", type=_names, default=None,
                   help=f"comma-separated, from: {','.join(list_methods())} (default all)")
    p.add_argument("--bits", type=_ints, default=[16, 32, 48, 64], help="default 16,32,48,64")
    p.add_argument("--seeds", type=_ints, default=[0], help="method seeds (default 0)")
    p.add_argument("--backbone", default="mobilenet_v2")
    p.add_argument("--mode", choices=("frozen", "finetune"), default="frozen")
    p.add_argument("--no-pretrained", action="store_true", help="random backbone initialisation")
    p.add_argument("--query-fraction", type=float, default=0.2)
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of the database used for model selection (default 0.2)")
    p.add_argument("--tune-bits", type=int, help="code length of model selection (default 32)")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--near-duplicates", type=int, default=NEAR_DUPLICATES, metavar="N",
                   help="database images altered (crop, quarter turn, brightness, JPEG) and "
                   "searched for their source by every method, as in ahcl evaluate "
                   "--near-duplicates, seeded by --split-seed "
                   f"(default {NEAR_DUPLICATES}; 0 disables)")
    p.add_argument("--set", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="change a method's fixed training budget, e.g. --set ahcl.outer_iters=5")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch CPU threads (default: torch's choice; 1 is faster and steadier "
                   "on a machine shared with other jobs)")
    add_device_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="benchmark folder (resumable)")
    p.set_defaults(func=run)


def parse_budgets(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["ahcl.epochs=1"]`` → ``{"ahcl": {"epochs": 1}}`` (values read as YAML scalars)."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in parse_set(items).items():
        method, dot, name = key.partition(".")
        if not dot or not method or not name:
            raise AhclError(f"--set takes METHOD.KEY=VALUE, got {key!r}")
        out.setdefault(method, {})[name] = value
    return out


def _device_options(args: argparse.Namespace) -> dict[str, Any]:
    options = run_options(args)
    return {"device": options["device"], "precision": options["precision"],
            "num_workers": options.get("num_workers")}


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this benchmark, rebuilt from the parsed options."""
    words = ["ahcl", "benchmark"]
    words += ["--data", args.data] if args.data else ["--dataset", args.dataset]
    words += ["--methods", ",".join(args.methods or list_methods()),
              "--bits", ",".join(map(str, args.bits)), "--seeds", ",".join(map(str, args.seeds)),
              "--backbone", args.backbone, "--mode", args.mode]
    if args.no_pretrained:
        words.append("--no-pretrained")
    for flag, value, default in (("--query-fraction", args.query_fraction, 0.2),
                                 ("--val-fraction", args.val_fraction, 0.2),
                                 ("--tune-bits", args.tune_bits, None),
                                 ("--split-seed", args.split_seed, 0),
                                 ("--near-duplicates", args.near_duplicates, NEAR_DUPLICATES)):
        if value != default:
            words += [flag, str(value)]
    for item in args.set:
        words += ["--set", item]
    if args.threads is not None:
        words += ["--threads", str(args.threads)]
    words += ["--out", args.out]
    return " ".join(shlex.quote(w) for w in words)


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        if args.threads < 1:
            raise AhclError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    config = BenchmarkConfig(
        data=args.data, dataset=args.dataset, methods=args.methods or list_methods(),
        bits=args.bits, seeds=args.seeds, backbone=args.backbone, mode=args.mode,
        pretrained=not args.no_pretrained, query_fraction=args.query_fraction,
        val_fraction=args.val_fraction, tune_bits=args.tune_bits, split_seed=args.split_seed,
        near_duplicates=args.near_duplicates, budgets=parse_budgets(args.set),
        **_device_options(args),
        command=_command(args))
    results = run_benchmark(config, args.out)
    summary = results["summary"]
    _print_means(f"mAP@all (mean over seeds) -> {args.out}/results.md", summary,
                 lambda e: e["map"])
    k = clipped_k(10, results["data"]["n_db"])
    if any("near_duplicates" in e for by_bits in summary.values() for e in by_bits.values()):
        _print_means(f"near-duplicate recall@{k} (mean over seeds)", summary,
                     lambda e: e["near_duplicates"]["recall_at"][k])
    return 0


def _print_means(title: str, summary: dict[str, Any], read: Callable[[dict], dict]) -> None:
    print(title)
    for method, by_bits in summary.items():
        print(f"  {method:11s} " + "  ".join(f"{b}: {read(e)['mean']:.4f}"
                                             for b, e in by_bits.items()))
