"""Checkpoints: each finished subvolume's labels, compressed, in a folder that survives a crash.

Layout of ``options.checkpoint-dir``::

    manifest.json        plan, config hash, codec, labelstitch version (written once, atomically)
    checksums.jsonl      one line per finished subvolume: {"sv": id, "sha256": ..., "bytes": n}
    sv-<id>.blk          the labels over the outer box (see labelstitch.codec), written to
                         sv-<id>.blk.partial first and renamed, so a file is whole or absent

The folder is bound to a plan and to the run's *segmentation settings*: the part of the
configuration that determines the segmented labels (input, ROI, preserved bodies, stages,
subvolume size, halo, masking, codec), given as a JSON dict by the pipeline
(:meth:`labelstitch.pipeline.RunConfig.segmentation_settings`). A run with ``resume``
checks that the folder belongs to the same plan and settings, keeps every
block whose file matches its recorded checksum and decodes, and recomputes the others,
saying why (missing, half-written, corrupt).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._version import __version__
from .codec import decode_labels
from .geometry import Plan

__all__ = ["CheckpointDir", "CheckpointError", "settings_hash"]

_FORMAT = "labelstitch-checkpoints/1"


class CheckpointError(ValueError):
    """The checkpoint folder cannot be used for this run."""


def settings_hash(settings: dict[str, Any]) -> str:
    """SHA-256 of segmentation settings (a JSON dict): equal hashes, equal segmented labels."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class CheckpointDir:
    """A checkpoint folder bound to one plan and one set of segmentation settings."""

    path: Path
    plan: Plan
    settings: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path, plan: Plan, settings: dict[str, Any], *, resume: bool) -> CheckpointDir:
        """Create the folder, or (with ``resume``) reopen one written for the same plan and settings.

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
        }
        if manifest_path.exists():
            if not resume:
                raise CheckpointError(
                    f"{folder} holds checkpoints of an earlier run; pass --resume (resume=True) to continue it, "
                    "or remove the folder to start over"
                )
            old = json.loads(manifest_path.read_text())
            if old.get("format") != _FORMAT:
                raise CheckpointError(f"{manifest_path} is not a labelstitch checkpoint manifest")
            if old["plan"] != manifest["plan"]:
                raise CheckpointError(
                    f"cannot resume from {folder}: its checkpoints were made with a different plan "
                    f"(block {old['plan']['block']}, halo {old['plan']['halo']}, shape {old['plan']['shape']}; "
                    f"now block {list(plan.block)}, halo {list(plan.halo)}, shape {list(plan.shape)})"
                )
            if old["config_hash"] != manifest["config_hash"]:
                changed = _changed_keys(old.get("segmentation", {}), manifest["segmentation"])
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

    def block_path(self, sv_id: int) -> Path:
        return self.path / f"sv-{sv_id}.blk"

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
            if sv.id in recorded and hashlib.sha256(data).hexdigest() != recorded[sv.id]:
                states[sv.id] = "corrupt"
                continue
            try:
                if decode_labels(data).shape != sv.outer.shape:
                    states[sv.id] = "corrupt"
                    continue
            except ValueError:
                states[sv.id] = "corrupt"
                continue
            states[sv.id] = "ok" if sv.id in recorded else "half-written"
        return states


def _changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key}")
    return changed


def save_block(path: Path, data: bytes) -> tuple[str, int]:
    """Write one block file atomically; return its SHA-256 and size (runs in workers)."""
    _atomic_write(path, data)
    return hashlib.sha256(data).hexdigest(), len(data)
