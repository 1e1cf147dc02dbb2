"""The Python API: every CLI command is a thin layer over one of these functions.

They take numpy arrays (or any array-like with ``shape``, ``dtype`` and slicing, such as a
zarr or dask array), volume strings and plain dicts, and return objects that also render
as the CLI's tables (``str()``) and JSON (``to_dict()``). Nothing prints unless asked
(``progress=True`` shows tqdm bars on stderr); logs go to the ``labelstitch`` logger.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:
    from .workflow import RunResult

__all__ = ["Comparison", "Evaluation", "StageSpec", "compare", "evaluate", "run", "segment"]

#: a stage: a registered name, a ``(name, parameters)`` pair, or a Python callable
StageSpec = Union[str, tuple[str, dict[str, Any]], Callable[..., Any]]

_names = itertools.count()


def run(
    config: str | os.PathLike[str] | dict[str, Any],
    *,
    executor: str = "serial",
    workers: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    create_output: bool = False,
    progress: bool = True,
) -> RunResult:
    """Run the pipeline for a config dict or a JSON/YAML file; returns a ``RunResult``
    (output location, per-stage timings, counts, VI when the config names a ground truth).

    The same as ``labelstitch run``; see :func:`labelstitch.workflow.run`.
    """
    from .workflow import run as _run

    return _run(
        config, executor=executor, workers=workers, resume=resume, overwrite=overwrite, create_output=create_output,
        progress=progress,
    )


@dataclass(frozen=True)
class Evaluation:
    """VI of a segmentation against ground truth, in bits, and the number of bodies."""

    merge: float
    split: float
    bodies: int

    @property
    def total(self) -> float:
        return self.merge + self.split

    def to_dict(self) -> dict[str, Any]:
        return {"merge": self.merge, "split": self.split, "total": self.total, "bodies": self.bodies}

    def __str__(self) -> str:
        return (
            f"false merge VI  {self.merge:.4f} bits\nfalse split VI  {self.split:.4f} bits\n"
            f"total VI        {self.total:.4f} bits\nbodies          {self.bodies}"
        )


def evaluate(seg: ArrayLike | str, gt: ArrayLike | str, *, ignore_gt_zero: bool = True) -> Evaluation:
    """Score ``seg`` against ``gt`` (arrays, or volume strings read block by block).

    >>> evaluate(np.array([[[1, 1, 2, 2]]]), np.array([[[5, 5, 5, 5]]])).to_dict()
    {'merge': 0.0, 'split': 1.0, 'total': 1.0, 'bodies': 2}
    """
    from .contingency import label_counts
    from .geometry import Plan
    from .workflow import evaluate_volumes

    with _as_store(seg, "seg") as s, _as_store(gt, "gt") as g:
        score = evaluate_volumes(s, g, ignore_gt_zero=ignore_gt_zero)
        ids: set[int] = set()
        for sv in Plan.grid(s.shape, 256, 0):
            found = label_counts(s.read(sv.interior))[0]
            ids.update(found[found != 0].tolist())
    return Evaluation(score.merge, score.split, len(ids))


@dataclass(frozen=True)
class Comparison:
    """Every stitching variant scored against ground truth: the paper's Table 2."""

    rows: tuple[Any, ...]

    def to_dict(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.rows]

    def __str__(self) -> str:
        lines = [f"{'stitching':<22}{'f.merge VI':>12}{'f.split VI':>12}{'VI':>8}{'bodies':>8}{'time s':>8}"]
        for r in self.rows:
            lines.append(f"{r.name:<22}{r.merge:>12.3f}{r.split:>12.3f}{r.total:>8.3f}{r.bodies:>8}{r.seconds:>8.2f}")
        return "\n".join(lines)


def compare(
    config: str | os.PathLike[str] | dict[str, Any],
    ground_truth: str,
    *,
    variants: list[tuple[str, str, dict[str, Any]]] | None = None,
    region: int = 32,
    executor: str = "serial",
) -> Comparison:
    """Stitch a finished run's checkpoints with every rule (plus ``variants``) and score each;
    see ``labelstitch compare`` and :func:`labelstitch.workflow.compare`."""
    from .workflow import compare as _compare

    return Comparison(tuple(_compare(config, ground_truth, variants=variants, region=region, executor=executor)))


class _as_store:
    """A volume string, or an array-like wrapped as an in-memory volume, as a context manager."""

    def __init__(self, value: Any, name: str) -> None:
        from .stores import MemoryStore, open_volume

        self.store = open_volume(value) if isinstance(value, (str, os.PathLike)) else MemoryStore(_checked(value, name), read_only=True)

    def __enter__(self) -> Any:
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()


def _checked(value: Any, name: str) -> Any:
    from .stores._memory import as_array_like

    value = as_array_like(value)
    if len(value.shape) != 3:
        raise ValueError(f"`{name}` must be 3-D (Z, Y, X), got shape {tuple(value.shape)}")
    return value


def _stage(spec: StageSpec, stage: str) -> Any:
    from .plugins import resolve_stage

    if isinstance(spec, tuple):
        name, params = spec
        return resolve_stage(stage, name, params)
    return resolve_stage(stage, spec)


def segment(
    grayscale: ArrayLike,
    *,
    predict: StageSpec = "naive_membrane_predictions",
    supervoxels: StageSpec = "seeded_watershed",
    agglomerate: StageSpec = "rag_agglomeration",
    block: int | tuple[int, int, int] = 512,
    overlap: int | tuple[int, int, int] = 20,
    rule: str = "medium",
    rule_params: dict[str, Any] | None = None,
    executor: str = "serial",
    workers: int | None = None,
    mask: ArrayLike | None = None,
    preserve: tuple[ArrayLike, list[int]] | None = None,
    progress: bool = False,
) -> NDArray[np.uint64]:
    """Segment an in-memory grayscale volume block by block and return the stitched labels.

    Parameters
    ----------
    grayscale : (Z, Y, X) array-like
        A numpy array, or anything with ``shape``, ``dtype`` and slicing (zarr, dask): only
        one subvolume at a time is read.
    predict, supervoxels, agglomerate : str, (str, dict) or callable
        The three stages: a registered name (``labelstitch plugins``), a ``(name, params)``
        pair, or a function with the stage's signature (for ``executor="processes"`` it
        must be importable from a module, not defined in ``__main__``).
    block, overlap : int or 3 ints
        Subvolume interior size and halo per side.
    rule, rule_params : str, dict
        The stitching rule and its parameters.
    executor, workers : str, int
        ``"serial"``, ``"processes"`` or ``"spark"``; the result does not depend on them.
    mask : (Z, Y, X) bool array-like, optional
        True where nothing may be labelled (added to the automatic background mask).
    preserve : (labels, ids), optional
        Keep these bodies of an existing segmentation as they are.

    Returns
    -------
    (Z, Y, X) ndarray of uint64
    """
    from .stores import create_volume, open_volume, register_memory_volume
    from .workflow import prepare, segment_blocks, stitch_and_write

    gray = _checked(grayscale, "grayscale")
    serial = executor == "serial"
    tmp = Path(tempfile.mkdtemp(prefix="labelstitch-segment-"))
    try:

        def volume(value: Any, name: str) -> str:
            """A volume string workers can open: in memory for serial runs, else a temp .npy."""
            value = _checked(value, name)
            if serial:
                return register_memory_volume(f"api-{os.getpid()}-{next(_names)}-{name}", value)
            uri = str(tmp / f"{name}.npy")
            store = create_volume(uri, tuple(value.shape), value.dtype, staged=False)
            from .geometry import Plan

            for sv in Plan.grid(tuple(value.shape), 128, 0):
                store.write(sv.interior, np.asarray(value[sv.interior.slices()]))
            store.flush()
            store.close()
            return uri

        config: dict[str, Any] = {
            "input": volume(gray, "grayscale"),
            "output": f"memory://api-{os.getpid()}-{next(_names)}-out" if serial else str(tmp / "out.zarr"),
            "options": {"chunk-size": block if isinstance(block, int) else list(block),
                        "overlap": overlap if isinstance(overlap, int) else list(overlap),
                        "stitch-algorithm": rule, "stitch-parameters": dict(rule_params or {})},
        }
        if preserve is not None:
            labels, ids = preserve
            config["preserve-bodies"] = {"segmentation": volume(labels, "preserve"), "bodies": [int(i) for i in ids]}
        from .config import load_config

        config = load_config(json.loads(json.dumps(config)))
        plan, task, _ = prepare(config)
        stages = (_stage(predict, "predict-voxels"), _stage(supervoxels, "create-supervoxels"),
                  _stage(agglomerate, "agglomerate-supervoxels"))
        task = replace(task, stages=stages, extra_mask=volume(mask, "mask") if mask is not None else None)
        blocks, _ = segment_blocks(plan, task, executor=executor, workers=workers, progress=progress)
        stitch_and_write(config, plan, task, blocks, executor=executor, workers=workers, progress=progress)
        with open_volume(config["output"]) as out:
            return out.read().astype(np.uint64, copy=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
