"""Exclusive locks that keep two runs from writing one output or one checkpoint folder.

A lock is a small file beside what it protects (``seg.zarr.lock``, ``ckpt.lock``), held
with ``flock`` for the whole run. The kernel releases an flock when its process ends,
however it ends (even ``kill -9``), so a lock can never outlive its holder; the file keeps
the holder's pid, host, start time and command, so a refused run can say who holds it, and
a lock file left by a dead process is reported and taken over. Locks on a shared file
system work where it supports ``flock`` (NFSv4, Lustre, GPFS do); volumes that are not
files (DVID) are locked in ``~/.cache/labelstitch/locks``, which protects against runs on
the same machine only; volumes held in this process's memory need no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from ._processes import process_alive
from .stores import VolumeRef

__all__ = ["RunLockedError", "hold", "lock_path"]

log = logging.getLogger("labelstitch")


class RunLockedError(RuntimeError):
    """Another run holds the lock on an output or a checkpoint folder."""


def lock_path(target: VolumeRef | str | os.PathLike[str]) -> Path | None:
    """The lock file of a volume or a folder (given as a path): beside it where it is a file
    or folder, else in the user's cache, named after what the volume occupies (None for
    in-memory volumes, which are private to a process)."""
    if not isinstance(target, VolumeRef):  # a plain folder (checkpoints)
        folder = Path(os.path.abspath(target))
        return folder.with_name(folder.name + ".lock")
    if target.capabilities.in_process:
        return None
    base = target.side_file_base()
    if base is not None:
        return Path(os.path.abspath(f"{base}.lock"))
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "labelstitch" / "locks"
    return cache / f"{hashlib.sha256('/'.join(target.footprint()).encode()).hexdigest()[:24]}.lock"


def _holder(text: str) -> dict[str, object]:
    try:
        found = json.loads(text)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}



def _describe(holder: dict[str, object]) -> str:
    if not holder:
        return "another process"
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(started))) if isinstance(started, (int, float)) else "?"
    return f"labelstitch pid {holder.get('pid')} on {holder.get('host')} (started {when}: {holder.get('command')})"


@contextlib.contextmanager
def hold(target: VolumeRef | str | os.PathLike[str], what: str) -> Iterator[Path | None]:
    """Hold the exclusive lock of ``target`` (a volume string or folder) until the block ends.

    Raises
    ------
    RunLockedError
        Another live process holds it; the message names that process and ``what``
        (e.g. "output seg.zarr").
    """
    path = lock_path(target)
    if path is None:
        yield None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
            os.close(fd)
            raise RunLockedError(
                f"{what} is in use by {_describe(holder)}; wait for that run to finish or stop it "
                f"(the lock is {path})"
            ) from None
        try:  # the file may have been removed by its last holder between our open and our flock
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        previous = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
        if previous:  # a holder that ends removes its file: this one was killed (the kernel freed its flock)
            state = "no longer running" if previous.get("host") != socket.gethostname() or not process_alive(int(previous.get("pid", 0))) else "gone"
            log.warning("%s: taking over a stale lock left by %s (%s)", what, _describe(previous), state)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
              "command": " ".join(sys.argv)[:500]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)  # closing releases the flock
