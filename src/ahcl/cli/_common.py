"""Helpers shared by the CLI verbs."""

from __future__ import annotations

import json
import sys
from typing import Any


def print_json(obj: Any) -> None:
    """Print ``obj`` as JSON on stdout (the machine-readable result of a verb)."""
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")
