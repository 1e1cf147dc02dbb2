"""Facts about other processes on this machine, for locks, staging cleanup and workers that die."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (one we may not signal counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def oom_kills() -> int | None:
    """How many processes the out-of-memory killer has killed in this process's cgroup
    (cgroup v2's ``memory.events``), or None where that is not readable."""
    try:
        for line in Path("/sys/fs/cgroup/memory.events").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def why_it_ended(exitcode: int | None, oom_before: int | None = None) -> str:
    """A process's end in words: ``exit code 3``, ``killed by SIGKILL``, and, when the
    cgroup's out-of-memory kills went up since ``oom_before``, that it was the killer's."""
    if exitcode is None:
        return "ended, its exit code unseen"
    if exitcode >= 0:
        return f"exited with code {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = f"signal {-exitcode}"
    now = oom_kills()
    if -exitcode == signal.SIGKILL and oom_before is not None and now is not None and now > oom_before:
        return f"killed by the out-of-memory killer ({name})"
    return f"killed by {name}" + (" (the out-of-memory killer, or kill -9)" if -exitcode == signal.SIGKILL else "")
