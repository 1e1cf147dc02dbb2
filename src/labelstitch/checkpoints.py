"""Checkpoints: each finished subvolume's labels, compressed, in a folder that survives a crash.

Layout of ``options.checkpoint-dir``::

    manifest.json        plan, config hash, codec, labelstitch version (written once, atomically)
    checksums.jsonl      one line per finished subvolume: {"sv": id, "sha256": ..., "bytes": n}
    sv-<id>.blk          the labels over the outer box (see labelstitch.codec) followed by
                         their SHA-256 (a 36-byte trailer), written by the worker that made
                         them to sv-<id>.blk.partial first and renamed, so a file is whole or
                         absent, and checks itself

The folder is bound to a plan and to the run's *segmentation settings*: the part of the
configuration that determines the segmented labels (input, ROI, preserved bodies, stages,
subvolume size, halo, masking; not the codec, since every block names its own), given as a JSON dict by the pipeline
(:meth:`labelstitch.pipeline.RunConfig.segmentation_settings`). A run with ``resume``
checks that the folder belongs to the same plan and settings, keeps every block whose file
matches its own checksum and decodes to the right shape (whether or not the driver lived
to record it in ``checksums.jsonl``), and recomputes the others, saying why (missing,
half-written, corrupt). Staging files (``*.partial``) left by a killed run are removed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._version import __version__
from .codec import decode_labels
from .geometry import Plan

__all__ = ["CheckpointDir", "CheckpointError", "block_name", "changed_keys", "finished_blocks", "read_block", "save_block", "settings_hash"]

_FORMAT = "labelstitch-checkpoints/1"


class CheckpointError(ValueError):
    """The checkpoint folder cannot be used for this run."""


def block_name(sv_id: int | str) -> str:
    """The file name of subvolume ``sv_id``'s block in a checkpoint folder (``"*"``: a glob of all)."""
    return f"sv-{sv_id}.blk"


def finished_blocks(folder: str | os.PathLike[str]) -> int:
    """How many subvolumes a checkpoint folder holds whole (what ``--resume`` starts from)."""
    path = Path(folder)
    return sum(1 for _ in path.glob(block_name("*"))) if path.is_dir() else 0


def settings_hash(settings: dict[str, Any]) -> str:
    """SHA-256 of segmentation settings (a JSON dict): equal hashes, equal segmented labels."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (a full disk is one clear error)."""
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise OSError(
                errno.ENOSPC,
                f"the disk of the checkpoint folder {path.parent} is full (writing {path.name}, {len(data):,} bytes); "
                "free some space and run again with --resume (finished subvolumes are kept)",
            ) from None
        raise
    os.replace(tmp, path)


@dataclass
class CheckpointDir:
    """A checkpoint folder bound to one plan and one set of segmentation settings."""

    path: Path
    plan: Plan
    settings: dict[str, Any]

    @classmethod
    def open(
        cls, path: str | Path, plan: Plan, settings: dict[str, Any], *, resume: bool,
        inputs: dict[str, dict[str, Any]] | None = None,
    ) -> CheckpointDir:
        """Create the folder, or (with ``resume``) reopen one written for the same plan and
        settings from the same input content (``inputs``: a signature per input volume).

        Raises
        ------
        CheckpointError
            The folder holds checkpoints and ``resume`` is False, or they belong to a
            different plan or config (naming what differs).
        """
        folder = Path(path)
        manifest_path = folder / "manifest.json"
        manifest = {
            "format": _FORMAT,
            "labelstitch": __version__,
            "config_hash": settings_hash(settings),
            "segmentation": settings,
            "plan": plan.to_dict(),
            "inputs": inputs or {},
        }
        if manifest_path.exists():
            if not resume:
                raise CheckpointError(
                    f"{folder} holds checkpoints of an earlier run; pass --resume (resume=True) to continue it, "
                    "or remove the folder to start over"
                )
            try:
                old = json.loads(manifest_path.read_text())
            except (ValueError, UnicodeDecodeError) as exc:
                raise CheckpointError(
                    f"{manifest_path} is damaged ({exc}); remove the folder {folder} to start over"
                ) from None
            if not isinstance(old, dict) or old.get("format") != _FORMAT or "plan" not in old:
                raise CheckpointError(f"{manifest_path} is not a labelstitch checkpoint manifest")
            if old["plan"] != manifest["plan"]:
                raise CheckpointError(
                    f"cannot resume from {folder}: its checkpoints were made with a different plan "
                    f"(block {old['plan']['block']}, halo {old['plan']['halo']}, shape {old['plan']['shape']}; "
                    f"now block {list(plan.block)}, halo {list(plan.halo)}, shape {list(plan.shape)})"
                )
            for key, now in (inputs or {}).items():
                then = old.get("inputs", {}).get(key)
                if then is not None and then != now:
                    changed = ", ".join(k for k in sorted(set(then) | set(now)) if then.get(k) != now.get(k))
                    raise CheckpointError(
                        f"cannot resume from {folder}: {key} changed since its checkpoints were made ({changed} differ); "
                        "old subvolumes would be stitched next to new ones: remove the folder to start over"
                    )
            if old["config_hash"] != manifest["config_hash"]:
                changed = changed_keys(old.get("segmentation", {}), manifest["segmentation"])
                raise CheckpointError(
                    f"cannot resume from {folder}: the config changed since its checkpoints were made "
                    f"({', '.join(changed) or 'segmentation settings'}); remove the folder to start over"
                )
        else:
            if folder.exists() and any(folder.iterdir()):
                raise CheckpointError(f"checkpoint folder {folder} is not empty and has no manifest.json; use an empty folder")
            folder.mkdir(parents=True, exist_ok=True)
            _atomic_write(manifest_path, json.dumps(manifest, indent=1).encode())
        return cls(folder, plan, settings)

    def remove_staging(self) -> int:
        """Remove ``*.partial`` files left by a killed run (the folder's lock guarantees that
        no live run is writing them); returns how many."""
        stale = list(self.path.glob("*.partial"))
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def block_path(self, sv_id: int) -> Path:
        return self.path / block_name(sv_id)

    def record(self, sv_id: int, sha256: str, size: int) -> None:
        """Note a finished block's checksum (called by the driver, one line per block)."""
        with open(self.path / "checksums.jsonl", "a") as f:
            f.write(json.dumps({"sv": sv_id, "sha256": sha256, "bytes": size}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _recorded(self) -> dict[int, str]:
        recorded: dict[int, str] = {}
        log = self.path / "checksums.jsonl"
        if log.exists():
            for line in log.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash
                recorded[int(entry["sv"])] = entry["sha256"]
        return recorded

    def verify(self) -> dict[int, str]:
        """The state of every subvolume's checkpoint: ``ok``, ``missing``, ``half-written`` or ``corrupt``."""
        recorded = self._recorded()
        states = {}
        for sv in self.plan:
            path = self.block_path(sv.id)
            if not path.exists():
                partial = path.with_name(path.name + ".partial").exists()
                states[sv.id] = "half-written" if partial else "missing"
                continue
            data = path.read_bytes()
            body, digest = _split_trailer(data)
            if digest is not None:
                valid = hashlib.sha256(body).digest() == digest
            elif sv.id in recorded:  # a block of the earlier format: the driver's record vouches for it
                valid = hashlib.sha256(body).hexdigest() == recorded[sv.id]
            else:
                states[sv.id] = "half-written"
                continue
            try:
                valid = valid and decode_labels(body).shape == sv.outer.shape
            except ValueError:
                valid = False
            states[sv.id] = "ok" if valid else "corrupt"
        return states


def changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two nested dicts (``options.chunk-size``)."""
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key}")
    return changed


_TRAILER_MAGIC = b"LSCK"
_TRAILER_SIZE = len(_TRAILER_MAGIC) + 32


def _split_trailer(data: bytes) -> tuple[bytes, bytes | None]:
    """A block file's encoded labels and the SHA-256 it carries (None: a file without one)."""
    if len(data) >= _TRAILER_SIZE and data[-_TRAILER_SIZE:-32] == _TRAILER_MAGIC:
        return data[:-_TRAILER_SIZE], data[-32:]
    return data, None


def save_block(path: Path, data: bytes) -> tuple[str, int]:
    """Write one block file atomically with its own SHA-256 after the encoded labels; return
    that checksum and the file's size (runs in the worker that made the block)."""
    digest = hashlib.sha256(data).digest()
    _atomic_write(path, data + _TRAILER_MAGIC + digest)
    return digest.hex(), len(data) + _TRAILER_SIZE


def read_block(path: str | Path) -> bytes:
    """The encoded labels of a block file (its checksum trailer removed, not checked: see
    :meth:`CheckpointDir.verify`)."""
    with open(path, "rb") as f:
        return _split_trailer(f.read())[0]
