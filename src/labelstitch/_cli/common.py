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


def _ids(text: str | None, flag: str = "--bodies") -> list[int] | None:
    """``"3,17,20"`` -> ``[3, 17, 20]`` (None for no text)."""
    if not text:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag} takes body ids separated by commas (e.g. 3,17,20), got {text!r}") from None


def _size(text: str | None) -> int | tuple[int, ...] | None:
    """``--subvolume-size``: ``"64"`` -> ``64``, ``"32,64,64"`` -> ``(32, 64, 64)``."""
    if not text:
        return None
    size = [int(v) for v in text.split(",")]
    return size[0] if len(size) == 1 else tuple(size)
