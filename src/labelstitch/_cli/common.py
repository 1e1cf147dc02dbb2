"""What every command shares: exit codes, progress, ``KEY=VALUE`` parameters."""

from __future__ import annotations

import argparse
import json
from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Exit codes of the ``labelstitch`` command."""

    #: everything worked
    OK = 0
    #: the work ran but some of it failed (a worker died, DVID stayed unreachable)
    FAILED = 1
    #: the command line, the config or the input was wrong (argparse uses 2 as well)
    USAGE_ERROR = 2
    #: a bug in labelstitch: the message asks for a bug report
    INTERNAL_ERROR = 3


def _progress(args: argparse.Namespace) -> bool:
    """Whether a command shows progress on stderr: not with -q or --json."""
    return not args.quiet and not args.json


def _params(pairs: list[str]) -> dict[str, Any]:
    """``["min_overlap=100", "min_fraction=0.8"]`` -> ``{"min_overlap": 100, "min_fraction": 0.8}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--param takes KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
