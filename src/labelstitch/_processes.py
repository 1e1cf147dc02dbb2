"""Facts about other processes on this machine, for locks, staging cleanup and workers that die."""

from __future__ import annotations

import os
import re
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


def _own_cgroup_files() -> list[str]:
    """The files of this process's memory cgroup that count out-of-memory kills (v2, v1)."""
    found = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return found
    for line in lines:  # "hierarchy:controllers:path"
        fields = re.fullmatch(r"\d+:([^:]*):(.*)", line)
        if fields is None:
            continue
        controllers, path = fields.groups()
        if controllers == "":  # cgroup v2
            found.append(f"/sys/fs/cgroup{path.rstrip('/')}/memory.events")
        elif "memory" in controllers.split(","):
            found.append(f"/sys/fs/cgroup/memory{path.rstrip('/')}/memory.oom_control")
    return found


def oom_kills() -> int | None:
    """How many processes the out-of-memory killer has killed: in this process's memory
    cgroup (v2 ``memory.events``, v1 ``memory.oom_control``), else on the machine
    (``/proc/vmstat``); None where none of them is readable."""
    for path in (*_own_cgroup_files(), "/proc/vmstat"):
        try:
            for line in Path(path).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
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
