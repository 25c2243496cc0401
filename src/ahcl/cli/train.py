"""``ahcl train``: train AHCL/ADSH and write a run folder."""

from __future__ import annotations

import argparse
import sys

from ahcl import distributed as dist
from ahcl.cli._common import add_device_args, print_json
from ahcl.config import TrainConfig, config_from_dict, load_yaml_config, parse_set
from ahcl.data.transforms import AUGMENTATIONS
from ahcl.device import resolve_device
from ahcl.methods.registry import DEFAULT_METHOD, TRAINABLE
from ahcl.training import train_run


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a hashing model and write a run folder",
                       description="Train AHCL (or ADSH) on a folder-per-class dataset. Under "
                                   "torchrun (torchrun --nproc_per_node N -m ahcl train ...) the "
                                   "processes share the work and rank 0 writes the run.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", metavar="DIR", help="folder with one sub-folder per class")
    src.add_argument("--dataset", metavar="NAME", help="registered dataset (ahcl datasets list)")
    p.add_argument("--out", required=True, metavar="RUN", help="run folder to write")
    p.add_argument("--method", choices=TRAINABLE,
                   help=f"{DEFAULT_METHOD} (default) or another method with a query network")
    p.add_argument("--bits", type=int, help="bits per item, n_bits (multiple of 8; default 32): "
                   "semantic plus instance bits")
    p.add_argument("--instance-bits", type=_instance_bits, metavar="N|auto",
                   help="of those, bits of the instance code that orders scenes within a class "
                        "(default auto: three quarters; 0: the method's codes alone)")
    p.add_argument("--backbone", help="backbone name (default mobilenet_v2)")
    p.add_argument("--mode", choices=("frozen", "finetune"))
    p.add_argument("--no-pretrained", action="store_true", help="random backbone initialisation")
    grp = p.add_mutually_exclusive_group()
    grp.add_argument("--query-fraction", type=float, help="fraction of each class held out as "
                     "queries (default 0.2; 0 puts every image in the database)")
    grp.add_argument("--split", metavar="FILE", help="reuse a saved split.json")
    p.add_argument("--seed", type=int)
    p.add_argument("--strict", action="store_true", help="fail on unreadable or duplicate images")
    p.add_argument("--config", metavar="FILE.yaml", help="YAML of config keys (defaults for flags)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set lam=100 (repeatable)")
    add_device_args(p)
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the frozen backbone's inference form")
    p.add_argument("--augment", choices=AUGMENTATIONS,
                   help="finetune augmentation: scene (default: random resized crop, flips, "
                        "rotations by 90 degrees) or none")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.set_defaults(func=run)


def _instance_bits(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not 'auto' or an integer") from None


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults ← YAML ← flags ← --set."""
    values = load_yaml_config(args.config) if args.config else {}
    flags = {"data": args.data, "dataset": args.dataset, "method": args.method,
             "n_bits": args.bits, "backbone": args.backbone, "mode": args.mode,
             "query_fraction": args.query_fraction, "split": args.split, "seed": args.seed,
             "device": args.device, "precision": args.precision, "num_workers": args.workers,
             "compile": args.compile, "augment": args.augment,
             "instance_bits": args.instance_bits}
    values.update({k: v for k, v in flags.items() if v is not None})
    if args.no_pretrained:
        values["pretrained"] = False
    if args.strict:
        values["strict"] = True
    values.update(parse_set(args.set))
    return config_from_dict(values)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    # NCCL for CUDA devices, gloo otherwise; each rank then takes the GPU LOCAL_RANK.
    dist.init_from_env(str(resolve_device(config.device)))
    total = getattr(config.params, "outer_iters", None) or config.params.epochs

    def show(row: dict) -> None:
        extra = (f"  bits changed {row['bits_changed']:.3f}  {row['seconds']:.1f}s"
                 if "bits_changed" in row else "")
        print(f"iteration {row['iteration'] + 1}/{total}  loss {row['loss']:.4f}{extra}",
              file=sys.stderr)

    result = train_run(config, args.out, resume=args.resume, on_iteration=show)
    if dist.rank() != 0:
        return 0
    summary = {"run": str(result.path), "method": result.method, "n_bits": result.n_bits,
               "semantic_bits": result.semantic_bits, "instance_bits": result.instance_bits,
               "n_db": int(len(result.db_labels)), "classes": result.classes}
    if args.json:
        print_json(summary)
    else:
        split = (f": {result.semantic_bits} semantic + {result.instance_bits} instance"
                 if result.instance_bits else "")
        print(f"trained {result.method} ({result.n_bits} bits{split}) on {summary['n_db']} database "
              f"images of {len(result.classes)} classes -> {result.path}")
        print(f"next: ahcl evaluate {result.path}   |   ahcl search {result.path} IMAGE")
    return 0
