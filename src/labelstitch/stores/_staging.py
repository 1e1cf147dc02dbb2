"""What file-backed volumes share: staged creation, space checks and memory-mapped access.

An output is written to a hidden sibling (``.partial-PID-NAME``) and renamed over its final
name only when complete. The staging of a process that died is removed by the next
creation of the same output. Memory-mapped outputs reserve their disk blocks when they are
created, so running out of space is one clear error up front, never a SIGBUS mid-write.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._processes import process_alive
from ..geometry import Box
from ._base import StoreError, VolumeRef, VolumeStore, not_three_d


class NoSpaceError(OSError):
    """The file system of an output has no room for it (an OSError: the run failed, the
    input was fine)."""


def staging_path(final: Path) -> Path:
    """The hidden sibling an output is written to before it is published. The name keeps the
    final name's suffix, so it is itself a valid volume string for worker processes."""
    return final.with_name(f".partial-{os.getpid()}-{final.name}")



def publish_folder(staging: Path, final: Path) -> None:
    """Rename a finished ``staging`` folder over ``final``: at once when there is no
    ``final`` yet, else by moving the old one aside (``.old-PID-NAME``, removed afterwards,
    or by :func:`remove_stale_staging` if this process dies in between), so that ``final``
    is always a whole folder, the old or the new."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        old = final.with_name(f".old-{os.getpid()}-{final.name}")
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old)
    else:
        os.replace(staging, final)


def remove_stale_staging(final: Path) -> list[Path]:
    """Remove the staging files and folders of ``final`` (``.partial-PID-NAME*``, and
    ``.old-PID-NAME`` from an interrupted publish) whose process is no longer running."""
    removed = []
    if not final.parent.is_dir():
        return removed
    for prefix in (".partial-", ".old-"):
        for path in final.parent.glob(f"{prefix}*-{final.name}*"):
            pid = path.name[len(prefix):].split("-", 1)[0]
            if not pid.isdigit() or int(pid) == os.getpid() or process_alive(int(pid)):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _free_bytes(folder: Path) -> int:
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free


def check_free_space(file: Path, shape: tuple[int, ...], dtype: Any, uri: str) -> None:
    """Refuse an output whose ``file`` will hold ``shape`` voxels of ``dtype`` uncompressed
    where its folder's file system cannot hold them."""
    folder = Path(os.path.abspath(file)).parent
    needed = int(np.prod(shape)) * np.dtype(dtype).itemsize
    free = _free_bytes(folder)
    if needed > free:
        raise NoSpaceError(
            errno.ENOSPC,
            f"not enough space for the output {uri}: it needs {needed:,} bytes and {folder} has {free:,} free; "
            "free some space or write the output elsewhere",
        )


def no_space(exc: OSError, uri: str, path: Path | str, needed: int | None = None) -> OSError:
    """``exc`` as a :class:`NoSpaceError` naming the output if the disk is full, else as it is."""
    if exc.errno != errno.ENOSPC:
        return exc
    need = f"; it needed {needed:,} more bytes" if needed else ""
    return NoSpaceError(
        errno.ENOSPC,
        f"the disk of {uri} is full (writing {path}, {_free_bytes(Path(path).parent):,} bytes free{need}); "
        "free some space and run again (--resume keeps finished subvolumes)",
    )


@contextlib.contextmanager
def disk_errors(uri: str) -> Iterator[None]:
    """Turn a full disk met anywhere inside the block (a worker's write included) into a
    :class:`NoSpaceError` that names the output ``uri``."""
    try:
        yield
    except NoSpaceError:
        raise
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise NoSpaceError(
            errno.ENOSPC,
            f"the disk of the output {uri} is full ({exc.strerror}); free some space and run again "
            "(--resume keeps finished subvolumes)",
        ) from exc


def reserve(path: Path, size: int, uri: str) -> None:
    """Allocate ``size`` bytes of ``path`` on disk now, so that writes through a memory map
    can never find the disk full (which kills the process with SIGBUS)."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        raise no_space(exc, uri, path, size) from None
    finally:
        os.close(fd)


class MemmapStore(VolumeStore):
    """A memory-mapped file (npy, TIFF): reads and writes touch only the boxes asked for;
    a staged output is renamed over the final path by :meth:`commit`."""

    supports_parallel_writes = True

    #: file name endings this class claims
    suffixes: tuple[str, ...] = ()

    def __init__(self, ref: VolumeRef, array: NDArray[Any], *, read_only: bool, staging: Path | None = None) -> None:
        super().__init__(ref, array.shape, array.dtype, read_only=read_only)
        self._array = array
        self._staging = staging

    #: the format's name in messages (".npy file")
    described: str = "file"

    @classmethod
    def claims(cls, text: str) -> bool:
        return text.rstrip("/").endswith(cls.suffixes)

    @staticmethod
    def _file(ref: VolumeRef) -> Path:
        assert ref.path is not None
        return ref.path

    @classmethod
    def check_space(cls, ref: VolumeRef, shape: tuple[int, ...], dtype: Any) -> None:
        check_free_space(cls._file(ref), shape, dtype, ref.text)

    @classmethod
    def _map(cls, path: str, *, read_only: bool) -> NDArray[Any]:
        """The file's array, memory-mapped where possible (ValueError if it is not one)."""
        raise NotImplementedError

    @classmethod
    def _map_new(cls, path: Path, shape: tuple[int, ...], dtype: np.dtype[Any]) -> NDArray[Any]:
        """A new zero-filled file of ``shape`` and ``dtype``, memory-mapped for writing."""
        raise NotImplementedError

    @classmethod
    def open(cls, ref: VolumeRef, *, read_only: bool = True) -> MemmapStore:
        if not cls._file(ref).is_file():
            raise StoreError(f"no {cls.described} at {ref}")
        try:
            array = cls._map(str(cls._file(ref)), read_only=read_only)
        except StoreError:
            raise
        except Exception as exc:  # each format's library has its own errors for a file that is not one
            raise StoreError(f"cannot read {ref} as a {cls.described}: {exc}") from None
        if array.ndim != 3:
            raise not_three_d(ref, array.shape)
        return cls(ref, array, read_only=read_only)

    @classmethod
    def _create(
        cls, ref: VolumeRef, shape: tuple[int, ...], dtype: np.dtype[Any], *, chunks: tuple[int, ...] | None, staged: bool
    ) -> MemmapStore:
        final = cls._file(ref)
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(final)
        target = staging_path(final) if staged else final
        cls.check_space(ref, shape, dtype)
        try:
            array = cls._map_new(target, tuple(shape), np.dtype(dtype))
            reserve(target, target.stat().st_size, ref.text)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return cls(ref, array, read_only=False, staging=target if staged else None)

    @classmethod
    def exists(cls, ref: VolumeRef) -> bool:
        return cls._file(ref).exists()

    @property
    def writer(self) -> VolumeRef:
        """Where other processes open this volume to write into it (the staged copy until commit)."""
        if self._staging is None:
            return self.ref
        return VolumeRef(type(self), str(self._staging), self._staging)

    def _read(self, box: Box) -> NDArray[Any]:
        return np.array(self._array[box.slices()])

    def _write(self, box: Box, data: NDArray[Any]) -> None:
        self._array[box.slices()] = data

    def flush(self) -> None:
        if isinstance(self._array, np.memmap):
            self._array.flush()

    def _publish_extras(self) -> None:
        """Hook for files that accompany the volume (run just before the rename)."""

    def commit(self) -> None:
        """Publish a staged output: flush it and rename it over the final path."""
        if self._staging is None:
            return
        self.flush()
        self._publish_extras()
        os.replace(self._staging, self._file(self.ref))
        self._staging = None

    def discard(self) -> None:
        """Remove a staged output that will not be published."""
        if self._staging is not None and self._staging.exists():
            self._staging.unlink()
        self._staging = None
