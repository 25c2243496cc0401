"""Helpers shared by the CLI verbs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ahcl.device import PRECISIONS
from ahcl.errors import AhclError, InvalidValueError


def print_json(obj: Any) -> None:
    """Print ``obj`` as JSON on stdout (the machine-readable result of a verb)."""
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def check_output_file(path: str | None, flag: str) -> None:
    """Refuse an output path that is a folder (or under a file) before any work is done."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise AhclError(f"{flag} {path} is a folder: give a file name", path=p)
    parent = next((q for q in p.parents if q.exists()), None)
    if parent is not None and not parent.is_dir():
        raise AhclError(f"{flag} {path}: {parent} is a file, not a folder", path=p)


def check_output_folder(path: str | None, flag: str) -> None:
    """Refuse an output folder that is an existing file."""
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise AhclError(f"{flag} {path} is a file: give a folder", path=Path(path))


def add_device_args(p: argparse.ArgumentParser, workers: bool = True) -> None:
    """``--device``, ``--precision`` (and ``--workers``): where the network runs (ahcl.device)."""
    p.add_argument("--device", default=None, metavar="DEV",
                   help="auto (default: CUDA, then MPS, else CPU), cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="autocast of the network: auto (default: bf16 on CUDA GPUs that have "
                        "it, else fp32), fp32, bf16, fp16 (GPU only)")
    if workers:
        p.add_argument("--workers", type=int, default=None, metavar="N",
                       help="image-decoding worker processes (default min(cores, 8))")


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """``load_run`` keywords from the device flags (absent flags keep the defaults)."""
    out: dict[str, Any] = {"device": args.device or "auto", "precision": args.precision or "auto"}
    workers = getattr(args, "workers", None)
    if workers is not None:
        if workers < 0:
            raise InvalidValueError("--workers", workers, "an integer >= 0")
        out["num_workers"] = workers
    return out
