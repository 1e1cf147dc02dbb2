"""How an output was made, recorded with it: the answer to "which classifier and which
settings made this volume?" weeks later.

Each run, resume or re-stitch adds one *entry* to the output's history (kept in its
metadata under ``provenance``: the OME-Zarr group's ``labelstitch`` attributes, the DVID
``labelstitch`` keyvalue instance, the stitch report): labelstitch's version and git
commit, the versions of the packages that shape the result, the resolved config, the
inputs' fingerprints, the checksums of model files, the executor and hosts, start and end
times, per-step and per-stage seconds, and the counts. A resume or re-stitch of the same
segmentation appends; a new segmentation starts a new history.

:func:`differences` compares what an existing output records with a new run, so that a run
with another input, model or config is refused naming what differs.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

from .._version import __version__
from ..checkpoints import changed_keys
from ..plugins import Stage
from ..runstatus import timestamp
from ..stores import StoreError, VolumeRef, volume_signature
from .config import RunConfig

__all__ = ["bound_inputs", "check_same_making", "differences", "entry", "environment", "format_history", "history_of",
           "made_from", "model_checksums", "output_metadata"]

#: the distributions whose versions can change a result
PACKAGES = ("numpy", "numba", "scipy", "scikit-image", "scikit-learn", "zarr", "crackle-codec", "lz4", "pyspark",
            "dask", "distributed", "torch", "onnxruntime")


#: config keys that do not change the labels written (where and how work is kept, scored, retried)
NOT_SHAPING = {"output", "ground-truth", "options.checkpoint-dir", "options.codec", "options.retries",
               "options.allow-missing-input", "options.write-grayscale"}


@lru_cache(maxsize=1)
def _source_commit() -> str | None:
    """The git commit of a labelstitch installed from a source checkout (``+dirty`` with
    uncommitted changes), None for an installed release."""
    folder = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no", "."],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


@lru_cache(maxsize=1)
def environment() -> dict[str, Any]:
    """labelstitch's version and source commit, Python's, and those of the installed packages
    that shape results."""
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {"labelstitch": __version__, "commit": _source_commit(), "python": platform.python_version(),
            "packages": packages}


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_checksums(stages: tuple[Stage, ...]) -> dict[str, str]:
    """SHA-256 of every file a stage's parameters name (classifiers, networks, their
    sidecars), by ``stage.parameter``: a retrained model with the same path is told apart."""
    found = {}
    for stage in stages:
        for name, value in sorted(stage.parameters.items()):
            if isinstance(value, (str, os.PathLike)) and os.path.isfile(value):
                found[f"{stage.stage}.{name}"] = _sha256(os.fspath(value))
    return found


def entry(command: str, config: dict[str, Any], settings_hash: str, inputs: dict[str, Any], models: dict[str, str],
          executor: str, started: str) -> dict[str, Any]:
    """A history entry as far as it is known before the output is written; the write step
    adds ``ended``, ``hosts``, the seconds and the counts (:func:`finish`)."""
    return {"command": command, **environment(), "config": config, "config-hash": settings_hash, "inputs": inputs,
            "models": models, "executor": executor, "driver": socket.gethostname(), "started": started}


def finish(record: dict[str, Any], **more: Any) -> dict[str, Any]:
    """The entry completed at the end of the write: end time and whatever ``more`` says."""
    return {**record, **more, "ended": timestamp()}


def history_of(metadata: dict[str, Any], settings_hash: str) -> list[dict[str, Any]]:
    """The history an output's metadata holds, when it belongs to the same segmentation
    (``settings_hash``): what a resume or re-stitch appends to. Else empty."""
    history = metadata.get("provenance", [])
    if not isinstance(history, list) or metadata.get("config-hash") != settings_hash:
        return []
    return list(history)


def differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between the last entry an output records and a new run's entry: the
    inputs' fingerprints, the model files' checksums, the config's keys. Empty: the same
    making."""
    said = []
    old_inputs, new_inputs = recorded.get("inputs", {}), current.get("inputs", {})
    for name in sorted(set(old_inputs) | set(new_inputs)):
        old, new = old_inputs.get(name), new_inputs.get(name)
        if old != new:
            said.append(f"{name} changed ({', '.join(changed_keys(old, new)) if old and new else 'added or removed'})")
    models = changed_keys(recorded.get("models", {}), current.get("models", {}))
    said += [f"model file {name} changed" for name in models]
    keys = [k for k in changed_keys(recorded.get("config", {}), current.get("config", {})) if k not in NOT_SHAPING]
    if keys or recorded.get("config-hash") != current.get("config-hash"):
        said.append("config changed (" + (", ".join(keys[:6]) or "its segmentation settings") + ")")
    return said


def format_history(metadata: dict[str, Any]) -> str:
    """An output's provenance as text, newest entry last (``labelstitch info``)."""
    history = metadata.get("provenance") or []
    if not history:
        return "no provenance recorded (written by labelstitch before 0.1, or by another tool)"
    lines = []
    for k, e in enumerate(history, 1):
        commit = f" (commit {e['commit'][:12]}{'+dirty' if str(e.get('commit', '')).endswith('+dirty') else ''})" \
            if e.get("commit") else ""
        lines.append(f"{k}. {e['command']} {e.get('started', '?')} -> {e.get('ended', '?')}: labelstitch "
                     f"{e.get('labelstitch', '?')}{commit}, Python {e.get('python', '?')}")
        lines.append(f"   executor {e.get('executor', '?')} on {', '.join(e.get('hosts') or [e.get('driver', '?')])}")
        packages = e.get("packages", {})
        lines.append("   packages " + ", ".join(f"{name} {version}" for name, version in packages.items()))
        lines.append(f"   config hash {e.get('config-hash', '?')[:16]}; inputs: " +
                     "; ".join(f"{name} {json.dumps(sig, sort_keys=True)[:120]}" for name, sig in e.get("inputs", {}).items()))
        if e.get("stitch"):
            lines.append(f"   stitched with {e['stitch'].get('rule')} {e['stitch'].get('params') or '(defaults)'}")
        if e.get("models"):
            lines.append("   models: " + ", ".join(f"{name} sha256 {digest[:16]}" for name, digest in e["models"].items()))
        if e.get("seconds"):
            lines.append("   seconds: " + ", ".join(f"{step} {value:.1f}" for step, value in e["seconds"].items()
                                                     if isinstance(value, (int, float))))
        if e.get("stage seconds"):
            lines.append("   stage seconds (summed over workers): " +
                         ", ".join(f"{stage} {value:.1f}" for stage, value in e["stage seconds"].items()))
        if e.get("counts"):
            lines.append("   counts: " + ", ".join(f"{name} {value}" for name, value in e["counts"].items()))
        if e.get("missing boxes"):
            lines.append(f"   left empty (failed): {', '.join(e['missing boxes'])}")
    return "\n".join(lines)


def made_from(config: RunConfig, stages: tuple[Stage, ...]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """What the segmented labels depend on besides the config: the content signature of
    every input volume, and the checksum of every model file (computed once per run: the
    files may be large)."""
    found = {"input": config.input, "preserve-bodies.segmentation": config.preserve_volume,
             **{f"predictions[{k}]": ref for k, ref in enumerate(config.predictions)}}
    return ({key: dict(volume_signature(ref)) for key, ref in found.items() if ref is not None},
            model_checksums(stages))


def bound_inputs(inputs: dict[str, dict[str, Any]], models: dict[str, str]) -> dict[str, dict[str, Any]]:
    """What a checkpoint folder is bound to: the inputs' signatures and the model files'
    checksums (``model STAGE.PARAMETER``), so a resume after a model was retrained in place
    is refused."""
    return {**inputs, **{f"model {name}": {"sha256": digest} for name, digest in models.items()}}


def output_metadata(output: VolumeRef) -> dict[str, Any]:
    """An existing output's metadata ({} when there is none), read once per run: whether a
    resume continues it, the making it records, the history a new write appends to."""
    if not output.exists():
        return {}
    with output.open() as store:
        return dict(store.metadata)


def check_same_making(output: VolumeRef, metadata: dict[str, Any], record: dict[str, Any]) -> None:
    """Refuse, without ``--overwrite``, an existing output whose ``metadata`` records another
    making (input, model or config), naming what differs."""
    history = metadata.get("provenance") or []
    if not history:
        return
    said = differences(history[-1], record)
    if said:
        raise StoreError(f"the output {output} exists and was made differently: {'; '.join(said)}; "
                         "--overwrite replaces it (or write to another output)")
