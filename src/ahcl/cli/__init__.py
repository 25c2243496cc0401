"""The ``ahcl`` command line: a thin layer over the library.

Each verb lives in its own module under :mod:`ahcl.cli` and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` to a function ``(args) -> int``. Exit codes: 0 ok,
1 user error (one line on stderr; the traceback only with ``-v``), 2 usage.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from typing import Sequence

from ahcl._version import __version__
from ahcl.cli import (benchmark, datasets, demo, encode, evaluate, index, search, serve,
                      train)
from ahcl.errors import AhclError

_USER_OS_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT,
                   errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG}

# Verb modules, in the order they appear in --help.
_VERBS = (datasets, train, evaluate, encode, search, demo, index, serve, benchmark)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = argparse.ArgumentParser(
        prog="ahcl",
        description="Remote-sensing image retrieval with asymmetric deep hashing (AHCL).",
    )
    parser.add_argument("--version", action="version", version=f"ahcl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log details and show tracebacks on errors")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND")
    for verb in _VERBS:
        verb.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status instead of exiting."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except AhclError as exc:
        if args.verbose:
            raise
        print(f"ahcl: error: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ahcl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (`ahcl ... | head`): not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:
        # The machine refused a file operation on a path the user gave (disk full, read-only,
        # no permission): one line, like any user error. Others are bugs: traceback.
        if args.verbose or exc.errno not in _USER_OS_ERRORS:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        print(f"ahcl: error: {_one_line(f'{exc.strerror}{where}')}", file=sys.stderr)
        return 1


def _one_line(message: str) -> str:
    """The error as the one line it is promised to be: line breaks in a name the user gave (a
    path may hold them) shown as ``\\n``."""
    return message.replace("\r", "\\r").replace("\n", "\\n")
