"""The Python API: every CLI command is a thin layer over one of these functions.

``run``, ``restitch`` and ``compare`` are the pipeline's own (:mod:`labelstitch.pipeline`);
the others adapt arrays and volume strings to it.

They take numpy arrays (or any array-like with ``shape``, ``dtype`` and slicing, such as a
zarr or dask array), volume strings and plain dicts, and return objects that also render
as the CLI's tables (``str()``) and JSON (``to_dict()``). Nothing prints unless asked
(``progress=True`` shows tqdm bars on stderr); logs go to the ``labelstitch`` logger.
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .geometry import Box, Plan
from .metrics import Score, format_scores
from .pipeline import Audit, BlocksFailed, ConfigError, ExecutorChoice, PipelineError, ShapeSummary, RunConfig, StageConfig, audit, check_plan_output, compare, evaluate_skeletons, mesh, prepare, restitch, run, skeletonize, tune
from .pipeline.planning import check_subvolume_memory
from .pipeline import check_shapes_work, keeps_supervoxels, score_floor, score_regions, score_volumes  # noqa: F401  (the command line asks the first two)
from .pipeline.config import EXAMPLE, SCHEMA
from .pipeline.options import markdown_table
from .hookspecs import describe_stage
from .plugins import PluginError, available_executors, parameters_of, plugin_of_executor, resolve_stage, stage_functions
from .figures import write_heatmaps
from .report import format_explanation
from .runstatus import format_status, read_status
from .executors import stop_all, stop_requested, stop_with  # a signal's exception, raised when it is safe
from .pipeline.provenance import format_history
from .view import Viewing, view
from .stores import DvidError, MemoryStore, StoreError, as_array_like, create_volume, memory_volume, open_volume, parse_volume

__all__ = [
    "Audit",
    "BlocksFailed",
    "ConfigError",
    "DvidError", "ShapeSummary",
    "PipelineError",
    "PluginError",
    "RunConfig",
    "StageSpec",
    "StoreError",
    "audit",
    "check_config",
    "compare",
    "config_example",
    "config_keys",
    "config_schema",
    "describe_plugins", "evaluate_skeletons", "mesh", "skeletonize",
    "evaluate",
    "evaluate_regions",
    "explain",
    "format_explanation",
    "format_scores",
    "restitch",
    "run",
    "run_status",
    "segment",
    "train",
    "train_pixel_classifier",
    "tune",
    "view",
    "Viewing",
    "write_comparison_slices",
    "write_heatmaps",
]

#: a stage: a registered name, a ``(name, parameters)`` pair, or a Python callable
StageSpec = Union[str, tuple[str, dict[str, Any]], Callable[..., Any]]
#: a config: a JSON/YAML file, a dict in file form, or a RunConfig
ConfigLike = Union[str, "os.PathLike[str]", dict[str, Any], RunConfig]


@contextmanager
def _as_store(value: Any, name: str) -> Iterator[Any]:
    """A volume string opened, or an array-like wrapped as an in-memory volume."""
    store = open_volume(value) if isinstance(value, (str, os.PathLike)) else MemoryStore(_checked(value, name), read_only=True)
    try:
        yield store
    finally:
        store.close()


def evaluate(seg: ArrayLike | str, gt: ArrayLike | str, *, ignore_gt_zero: bool = True) -> Score:
    """Score ``seg`` against ``gt`` (arrays, or volume strings read block by block): VI
    merge/split and the number of bodies (``labelstitch evaluate``).

    >>> evaluate(np.array([[[1, 1, 2, 2]]]), np.array([[[5, 5, 5, 5]]])).to_dict()
    {'merge': 0.0, 'split': 1.0, 'total': 1.0, 'bodies': 2}
    """
    with _as_store(seg, "seg") as s, _as_store(gt, "gt") as g:
        return score_volumes(s, g, ignore_gt_zero=ignore_gt_zero)


def agglomeration_floor(supervoxels: ArrayLike | str, gt: ArrayLike | str, *, ignore_gt_zero: bool = True) -> Score:
    """The perfect-agglomeration floor: the VI of an oracle that merges each supervoxel into
    the ground-truth body it overlaps most (``labelstitch evaluate SV GT --floor``). Its
    false merges come from supervoxels that straddle bodies, which no agglomeration can
    undo: a high floor says to improve the supervoxels, a score far above a low floor says
    to improve the agglomeration.

    >>> agglomeration_floor(np.array([[[1, 1, 2, 2]]]), np.array([[[5, 5, 5, 5]]])).to_dict()
    {'merge': 0.0, 'split': 0.0, 'total': 0.0, 'bodies': 1}
    """
    with _as_store(supervoxels, "supervoxels") as s, _as_store(gt, "gt") as g:
        return score_floor(s, g, ignore_gt_zero=ignore_gt_zero)


def evaluate_regions(seg: ArrayLike | str, gt: ArrayLike | str, *, region: int = 32, ignore_gt_zero: bool = True) -> Any:
    """VI of every ``region``-sized block of ``seg`` against ``gt`` (a
    :class:`~labelstitch.metrics.RegionalVI`, for ``labelstitch evaluate --heatmap``)."""
    with _as_store(seg, "seg") as s, _as_store(gt, "gt") as g:
        return score_regions(s, g, region, ignore_gt_zero=ignore_gt_zero)


def write_comparison_slices(
    path: str | os.PathLike[str], grayscale: str, ground_truth: str | None, rows: list[Score], *, z: int | None = None
) -> None:
    """The paper's kind of picture of a comparison: one Z slice (the middle one by default)
    of the grayscale, the truth and every variant's output (``Score.output``), each panel
    titled with its name and VI in bits, the same colour for the same neuron across panels,
    a scale bar in µm when the grayscale records its voxel size (see
    :func:`labelstitch.figures.write_slices`). Reads that slice of each volume only."""
    from .figures import write_slices

    def plane(uri: str, depth: int) -> Any:
        with open_volume(uri) as store:
            return store.read(Box((depth, 0, 0), (depth + 1, *store.shape[1:])))[0]

    with open_volume(grayscale) as gray:
        depth = gray.shape[0] // 2 if z is None else z
        resolution = gray.voxel_size
    truth = plane(ground_truth, depth) if ground_truth else None
    panels = [(f"{r.name or r.rule}\nmerge {r.merge:.2f} bits, split {r.split:.2f} bits", plane(r.output, depth))
              for r in rows if r.output]
    write_slices(path, plane(grayscale, depth), truth, panels, z=depth, resolution=resolution)


def explain(body: int, output: str, *, checkpoints: str | None = None) -> dict[str, Any]:
    """The chain of matches that built body ``body`` of a finished output, read from its
    stitch record (beside a file output, or in ``checkpoints`` for a DVID output)."""
    from .report import explain_body, report_paths

    paths = report_paths(parse_volume(output), checkpoints)
    if paths is None:
        raise ValueError(f"{output} is not a file: give --checkpoints DIR, the run's checkpoint folder, where its stitch record is")
    if not paths["npz"].exists():
        raise ValueError(f"no stitch record for {output} (expected {paths['npz']})")
    return explain_body(paths["npz"], body)


def check_config(
    config: ConfigLike, *, executor: str = "serial", workers: int | None = None, spark_master: str | None = None,
    dask_scheduler: str | None = None,
) -> tuple[RunConfig, Plan, list[str]]:
    """Every check a run makes before any work (``labelstitch config --check``): the config,
    its volumes, plugins, rule, subvolume size (for the subvolumes ``executor`` runs at
    once on this machine, as ``run`` checks it), and the output (apart from the inputs,
    writable, with room where its size is known, aligned for DVID). Returns the typed
    config, the plan it makes and notes (an existing output that needs ``--overwrite``)."""
    prepared = prepare(RunConfig.load(config))
    with ExecutorChoice(executor, workers, spark_master, dask_scheduler).opened() as pool:
        check_subvolume_memory(prepared.plan, prepared.task.stages, at_once=pool.items_at_once,
                               context=prepared.task.context)
    output = prepared.config.output
    check_plan_output(prepared, output, overwrite=True)
    notes = [f"the output {output} exists: the run needs --overwrite (or --resume) to replace it"] if output.exists() else []
    return prepared.config, prepared.plan, notes + [f"intensity range {prepared.intensity_note}"]


def interruption_note(config: ConfigLike) -> str:
    """What an interrupted run leaves and how to go on: the finished subvolumes a checkpoint
    folder keeps for ``--resume``, or that nothing is kept without one (the output, staged,
    was not published either way)."""
    from .checkpoints import finished_blocks

    try:
        loaded = RunConfig.load(config)
    except (ValueError, OSError):
        return "the output was not written"
    if not loaded.checkpoint_dir:
        return ("nothing was kept: without options.checkpoint-dir a run starts again from the beginning (the output "
                "was not written)")
    done = finished_blocks(loaded.checkpoint_dir)
    return (f"{done} finished subvolume{'s' * (done != 1)} kept in {loaded.checkpoint_dir}; "
            f"`labelstitch run {config} --resume` continues from them (the output was not written)")


def config_schema() -> dict[str, Any]:
    """The JSON schema of a config file."""
    return SCHEMA


def config_example() -> dict[str, Any]:
    """An example config (the seed paper's Appendix B layout)."""
    return EXAMPLE


def config_keys() -> str:
    """Every config key with its meaning, unit and default, as a Markdown table (the one in
    docs/pipeline.md; ``labelstitch config --keys``)."""
    return markdown_table()


def _first_sentence(doc: str) -> str:
    r"""The first sentence of a docstring, whole (its first paragraph's lines joined).

    >>> _first_sentence("Watershed of the boundary channel from the centres of the\ncells: seeds. More.")
    'Watershed of the boundary channel from the centres of the cells: seeds.'
    """
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[: end + 1]


def describe_plugins() -> dict[str, dict[str, dict[str, Any]]]:
    """Every stage function: ``{stage: {name: {"plugin", "parameters", "doc", "across_blocks",
    "reads", "writes", "bytes_per_voxel", "context"}}}``, parameters with their defaults
    (``inspect.Parameter.empty`` where required); ``across_blocks``: an agglomeration that
    ``options.agglomerate-across-blocks`` can use; ``reads``/``writes``: the prediction
    channels it declares, as ``(meaning, channel or parameter)`` pairs."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for stage, functions in stage_functions().items():
        out[stage] = {}
        for name, (fn, plugin) in sorted(functions.items()):
            info = describe_stage(fn)
            out[stage][name] = {
                "plugin": plugin, "parameters": parameters_of(fn, stage), "doc": _first_sentence(inspect.getdoc(fn) or ""),
                "across_blocks": info.graph is not None, "bytes_per_voxel": info.bytes_per_voxel, "context": info.context,
                "reads": [(c.meaning, c.index) for c in info.reads], "writes": [(c.meaning, c.index) for c in info.writes],
            }
    return out


def describe_executors() -> dict[str, str]:
    """Every executor ``--executor`` accepts, with the plugin that provides it (the
    built-ins', or an installed package's entry point, such as ``dask``)."""
    return {name: plugin_of_executor(name) for name in available_executors()}


def format_plugins(found: dict[str, dict[str, dict[str, Any]]], executors: dict[str, str]) -> str:
    """:func:`describe_plugins` and :func:`describe_executors` as ``labelstitch plugins`` prints them."""
    lines = []
    for stage, functions in found.items():
        lines.append(f"{stage}:")
        for name, info in functions.items():
            params = ", ".join(k if v is inspect.Parameter.empty else f"{k}={v!r}" for k, v in info["parameters"].items())
            across = ", also across blocks" if info["across_blocks"] else ""
            lines.append(f"  {name}({params})  [{info['plugin']}{across}]")
            if info["doc"]:
                lines.append(textwrap.fill(info["doc"], width=100, initial_indent=" " * 6, subsequent_indent=" " * 6))
            for direction in ("reads", "writes"):
                if info[direction]:
                    lines.append(f"      {direction} " + ", ".join(f"{meaning} ({index})" for meaning, index in info[direction]))
            needs = [f"{info['bytes_per_voxel']} bytes a voxel" * bool(info["bytes_per_voxel"]), f"{info['context']} voxels of context" * bool(info["context"])]
            if any(needs):
                lines.append("      needs " + " and ".join(n for n in needs if n) + " beyond the pipeline's own")
    lines.append("executors (--executor):")
    lines += [f"  {name}  [{plugin}]" for name, plugin in executors.items()]
    return "\n".join(lines)


def _whole(volume: str) -> Any:
    """All of a stored volume (training volumes are small enough to hold)."""
    with open_volume(volume) as store:
        return store.read()


def train_pixel_classifier(
    grayscale: str, labels: str, output: str, *, annotations: bool = False, trees: int = 50, samples: int = 200_000,
    two_stage: bool = False, mitochondria: str | None = None, affinities: bool = False,
) -> dict[str, Any]:
    """Fit the ``pixel_classifier`` plugin's random forest from a grayscale volume and a
    label volume (membranes are label changes and 0) or, with ``annotations``, 1/2/3/0 marks;
    write it to ``output`` and return its info. ``mitochondria``, a mask volume (non-zero
    = mitochondrion), adds a second output channel, the mitochondria probability;
    ``affinities`` a forest of nearest-neighbour affinities (``affinity_classifier``)."""
    from .plugins.classifier import membrane_annotations
    from .plugins.classifier import train_pixel_classifier as _train

    if annotations and (mitochondria or affinities):
        raise ValueError("give mitochondria as class 3 of the annotations, or as a mask beside a label volume, not both"
                         if mitochondria else "--affinities needs a label volume of neurons, not annotations")
    gray, marks = _whole(grayscale), _whole(labels)
    mito = _whole(mitochondria) if mitochondria else None
    clf = _train(gray, marks.astype("uint8") if annotations else membrane_annotations(marks, mito), n_estimators=trees,
                 max_samples=samples, two_stage=two_stage, affinities=marks if affinities else None)
    clf.save(output)
    return dict(clf.info)


def train(
    grayscale: str, ground_truth: str, out: str, *, validation: tuple[int, int] | None = None, trees: int = 50,
    samples: int = 200_000, margin: float = 0.05, two_stage: bool = False, mitochondria: str | None = None,
    affinities: bool = False, overwrite: bool = False, progress: bool = False,
) -> Any:
    """Train every model of a segmentor on one volume with ground truth and tune it on a
    held-out Z range of it (``validation``; by default the last and the first quarter, each in turn): the voxel classifier,
    the supervoxel stage, the agglomeration (learned, if it beats mean-boundary agglomeration by ``margin`` bits there)
    and its threshold. Voxel classifiers learn from at most ``samples`` voxels (fewer: faster). ``two_stage``: a
    two-stage (auto-context) voxel classifier (``two_stage_predictions``). ``mitochondria``, a mask volume (non-zero =
    mitochondrion), adds a mitochondria channel and tries every agglomeration context-aware too. ``affinities`` adds
    the voxel classifier's affinity forest (``affinity_classifier``) and tries ``affinity_agglomeration`` and the
    learned agglomeration with its affinities. An existing ``out`` is replaced only with ``overwrite``, and only once
    training succeeded. Writes the models and ``out/segmentor.json`` (the value of ``options.segmentor.configuration``;
    a config can name the file as ``options.segmentor``) and returns a :class:`~labelstitch.plugins.training.TrainResult`
    (``.table()`` prints the validation VI of every choice). The same as ``labelstitch train``.

    >>> import labelstitch as ls, numpy as np, json, tempfile
    >>> from pathlib import Path
    >>> from labelstitch.synthetic import em_volume
    >>> gray, truth = em_volume((40, 48, 48), n_neurites=16, seed=3)
    >>> folder = tempfile.mkdtemp(); np.save(f"{folder}/g.npy", gray); np.save(f"{folder}/t.npy", truth)
    >>> result = ls.train(f"{folder}/g.npy", f"{folder}/t.npy", f"{folder}/model", trees=5)
    >>> sorted(json.loads(Path(result.path).read_text()))
    ['agglomerate-supervoxels', 'create-supervoxels', 'predict-voxels']
    """
    import sys

    from .plugins.training import train_segmentor

    gray, truth = _whole(grayscale), _whole(ground_truth)
    mito = _whole(mitochondria) if mitochondria else None
    log = (lambda line: print(f"train: {line}", file=sys.stderr)) if progress else (lambda line: None)
    return train_segmentor(gray, truth, out, validation=validation, trees=trees, samples=samples, margin=margin,
                           two_stage=two_stage, mitochondria=mito, affinities=affinities, overwrite=overwrite, log=log)


def _checked(value: Any, name: str) -> Any:
    value = as_array_like(value)
    if len(value.shape) != 3:
        raise ValueError(f"`{name}` must be 3-D (Z, Y, X), got shape {tuple(value.shape)}")
    return value


def _stage(spec: StageSpec, stage: str) -> Any:
    if isinstance(spec, tuple):
        name, params = spec
        return resolve_stage(stage, name, params)
    return resolve_stage(stage, spec)


#: RunConfig fields as :func:`segment` calls them
_SEGMENT_ARGUMENTS = {"subvolume_size": "block", "halo": "overlap", "preserve_bodies": "preserve"}


def _in_arguments(message: str, names: dict[str, str], function: str) -> str:
    """A RunConfig error with its field names replaced by a function's argument names."""
    for field_name, argument in names.items():
        message = message.replace(f"{field_name}=", f"{argument}=")
    return message.replace("invalid RunConfig:", f"invalid arguments of {function}():")


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

    Notes
    -----
    The serial executor reads the arrays in place through in-memory volumes, removed
    again when the call returns; other executors' workers are separate processes, so the
    arrays are spilled block by block to a temporary folder, removed as well.
    """
    gray = _checked(grayscale, "grayscale")
    in_memory = executor == "serial"
    with ExitStack() as cleanup:
        tmp = Path(tempfile.mkdtemp(prefix="labelstitch-segment-"))
        cleanup.callback(shutil.rmtree, tmp, True)

        def volume(value: Any, name: str) -> str:
            """A volume string the workers can open: in memory for serial runs, else a temp .npy."""
            value = _checked(value, name)
            if in_memory:
                return cleanup.enter_context(memory_volume(value, name=name))
            uri = str(tmp / f"{name}.npy")
            store = create_volume(uri, tuple(value.shape), value.dtype, staged=False)
            for sv in Plan.grid(tuple(value.shape), 128, 0):
                store.write(sv.interior, np.asarray(value[sv.interior.slices()]))
            store.flush()
            store.close()
            return uri

        output = cleanup.enter_context(memory_volume(name="out")) if in_memory else str(tmp / "out.zarr")
        stages = (_stage(predict, "predict-voxels"), _stage(supervoxels, "create-supervoxels"),
                  _stage(agglomerate, "agglomerate-supervoxels"))
        preserve_volume, preserve_bodies = None, ()
        if preserve is not None:
            preserve_volume, preserve_bodies = volume(preserve[0], "preserve"), tuple(int(i) for i in preserve[1])
        try:
            config = RunConfig(
                input=volume(gray, "grayscale"), output=output, subvolume_size=block, halo=overlap, rule=rule,
                rule_params=dict(rule_params or {}), preserve_volume=preserve_volume, preserve_bodies=preserve_bodies,
                stages=tuple(StageConfig(s.name, dict(s.parameters)) for s in stages),
                resolution=(1.0, 1.0, 1.0),  # the labels come back as an array: no voxel size is recorded anywhere
            )
        except ConfigError as exc:  # in the caller's words: block=0, not subvolume_size=0
            raise ConfigError(_in_arguments(str(exc), _SEGMENT_ARGUMENTS, "segment")) from None
        run(config, executor=executor, workers=workers, progress=progress, stages=stages,
             mask=volume(mask, "mask") if mask is not None else None)
        with open_volume(output) as out:
            return out.read().astype(np.uint64, copy=False)


def run_status(checkpoint_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The status of the run that uses ``checkpoint_dir`` (``labelstitch status``), while it
    goes or after it ended: its state (``running``, ``finished``, ``finished with missing
    blocks``, ``failed``, ``interrupted``, or ``stopped`` when its process is gone), step,
    subvolumes done, restored, retried and failed (each with its box, stage, error and
    worker) and seconds. :func:`labelstitch.runstatus.format_status` prints it as text.

    Raises ``ValueError`` for a folder no run has used."""
    return read_status(checkpoint_dir)


def info(output: str) -> dict[str, Any]:
    """What an output records about itself (``labelstitch info``): shape, dtype, voxel size,
    whether it was completed, and its provenance: one entry per run, resume or re-stitch
    that made it, with versions, commit, config, input fingerprints, model checksums,
    executor, hosts, times and counts (:func:`format_provenance` prints it).

    >>> import numpy as np, tempfile, os, labelstitch, labelstitch.synthetic
    >>> folder = tempfile.mkdtemp()
    >>> np.save(os.path.join(folder, "gray.npy"), labelstitch.synthetic.em_volume((16, 32, 32), n_neurites=5)[0])
    >>> result = labelstitch.run({"input": os.path.join(folder, "gray.npy"), "output": os.path.join(folder, "seg.zarr"),
    ...                           "options": {"chunk-size": 16, "overlap": 2, "resolution": [8, 8, 8]}})
    >>> made = labelstitch.info(os.path.join(folder, "seg.zarr"))
    >>> [e["command"] for e in made["provenance"]], made["provenance"][0]["labelstitch"] == labelstitch.__version__
    (['run'], True)
    """
    with open_volume(output) as store:
        metadata = store.metadata
        return {"output": str(output), "shape": list(store.shape), "dtype": str(store.dtype),
                "voxel size": list(store.voxel_size) if store.voxel_size else None,
                "complete": metadata.get("complete"), "config-hash": metadata.get("config-hash"),
                "provenance": metadata.get("provenance", [])}


def format_provenance(made: dict[str, Any]) -> str:
    """:func:`info`'s answer as text."""
    head = (f"{made['output']}: {made['shape']} {made['dtype']}, voxel size {made['voxel size'] or 'unknown'} nm, "
            f"{'complete' if made['complete'] else 'not completed' if made['complete'] is False else 'not written by labelstitch'}")
    return head + "\n" + format_history(made)


def stop_running_work() -> None:
    """Stop the running items of every executor this process made, at once (for a signal
    handler: the run then unwinds, and its executors clean up as they close)."""
    stop_all()


__all__ += ["describe_executors", "format_plugins", "format_provenance", "format_status", "info", "stop_requested", "stop_running_work", "stop_with"]
