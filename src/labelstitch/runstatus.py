"""A run's status in its checkpoint folder, so that a week-long run can be followed from
another shell (``labelstitch status CHECKPOINTS``) while it goes and read after it ended.

The driver alone writes ``status.json`` (atomically: a whole file or the previous one),
at every change of step, failure or end, and at most once a second for finished blocks.
A status that says ``running`` for a process no longer alive on this machine is reported
as ``stopped``: the run was killed before it could say so.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from ._processes import process_alive

__all__ = ["STATUS_FILE", "RunStatus", "failure_table", "format_status", "read_status", "timestamp"]

STATUS_FILE = "status.json"

log = logging.getLogger("labelstitch")


def timestamp() -> str:
    """Local time with its UTC offset, as run records say it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class RunStatus:
    """The status file of one run: counts of blocks done, restored, retried and failed, the
    failures themselves, the step the run is in, and its state."""

    def __init__(self, folder: str | os.PathLike[str], subvolumes: int, executor: str) -> None:
        self.path = Path(folder) / STATUS_FILE
        self._start = time.monotonic()
        self._written = 0.0
        self._failed = False
        self.data: dict[str, Any] = {
            "state": "running", "step": "segment", "pid": os.getpid(), "host": socket.gethostname(),
            "executor": executor, "started": timestamp(), "updated": timestamp(), "seconds": 0.0,
            "subvolumes": subvolumes, "restored": 0, "done": 0, "retried": 0, "failed": [], "retries": [],
        }
        self.write(force=True)

    def write(self, *, force: bool = False) -> None:
        """Publish the status (throttled to once a second unless ``force``)."""
        if not force and time.monotonic() - self._written < 1.0:
            return
        self.data["updated"] = timestamp()
        self.data["seconds"] = round(time.monotonic() - self._start, 1)
        staging = self.path.with_name(f".{STATUS_FILE}.{os.getpid()}.partial")
        try:
            staging.write_text(json.dumps(self.data, indent=1))
            os.replace(staging, self.path)
        except OSError as exc:  # a status that cannot be written (a full disk) never stops the run
            staging.unlink(missing_ok=True)
            if not self._failed:
                log.warning("cannot update the run status %s (%s); the run goes on", self.path, exc.strerror or exc)
            self._failed = True
            return
        self._written = time.monotonic()

    def restored(self, count: int) -> None:
        self.data["restored"] = count
        self.write(force=True)

    def done(self, sv_id: int) -> None:
        self.data["done"] += 1
        self.write()

    def retried(self, failure: dict[str, Any]) -> None:
        self.data["retried"] += 1
        self.data["retries"] = (self.data["retries"] + [failure])[-20:]  # the latest few
        self.write(force=True)

    def failed(self, failure: dict[str, Any]) -> None:
        self.data["failed"].append(failure)
        self.write(force=True)

    def step(self, name: str) -> None:
        self.data["step"] = name
        self.write(force=True)

    def end(self, state: str, note: str = "") -> None:
        """``finished``, ``failed`` or ``interrupted``, with a line of what to do next."""
        self.data["state"] = state
        self.data["note"] = note
        self.data["ended"] = timestamp()
        self.write(force=True)


def read_status(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The status of the run in a checkpoint folder; ``running`` becomes ``stopped`` when its
    process is gone from this machine. Raises ``ValueError`` for a folder without one."""
    path = Path(folder) / STATUS_FILE
    if not path.is_file():
        what = "is not a folder" if not Path(folder).is_dir() else "has no status.json (no run has used it yet)"
        raise ValueError(f"{folder} {what}: give the options.checkpoint-dir of a run")
    try:
        status: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the run status {path}: {exc}") from None
    if status.get("state") == "running" and status.get("host") == socket.gethostname() \
            and not process_alive(int(status.get("pid", 0))):
        status["state"] = "stopped"
        status["note"] = "its process is gone (killed?); continue it with `labelstitch run CONFIG --resume`"
    return status


def format_status(status: dict[str, Any]) -> str:
    """The status as a few lines of text, with a table of failed subvolumes."""
    total = status["subvolumes"]
    finished = status["restored"] + status["done"]
    failed = status["failed"]
    lines = [
        f"state       {status['state']} ({status['step']}; pid {status['pid']} on {status['host']}, "
        f"{status['executor']} executor)",
        f"started     {status['started']}   updated {status['updated']}   {status['seconds']:.0f} s",
        f"subvolumes  {finished} of {total} finished ({status['restored']} from checkpoints, {status['done']} "
        f"segmented now), {len(failed)} failed, {status['retried']} retries",
    ]
    if status.get("note"):
        lines.append(f"note        {status['note']}")
    if failed:
        lines.append("failed:")
        lines += ["  " + line for line in failure_table(failed).splitlines()]
    return "\n".join(lines)


def failure_table(failures: list[dict[str, Any]]) -> str:
    """Failed subvolumes (as ``BlockFailure.to_dict()`` gives them) as an aligned table."""
    rows = [("subvolume", "box", "stage", "tries", "worker", "error")]
    rows += [(str(f["subvolume"]), f["box"], f["stage"], str(f["attempts"]), f["worker"], f["error"]) for f in failures]
    widths = [max(len(r[k]) for r in rows) for k in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] for r in rows)
