"""The driver: ``run``, ``restitch`` and ``compare`` as short compositions of the steps.

==============  ============================================================================
``run``         prepare → check output → open checkpoints → segment all → stitch and write
                → score
``restitch``    prepare (other rule) → check output → verified checkpoints → stitch and write
``compare``     prepare → verified checkpoints → for every variant: stitch and write → score
==============  ============================================================================

Each acquires its executor once (or uses the open one it is given) and closes only what
it opened.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any


from ..checkpoints import CheckpointDir, CheckpointError
from ..executors import Executor
from ..locks import hold
from ..metrics import Score
from ..plugins import Stage
from ..plugins.rules import available_rules
from ..report import report_paths
from ..runstatus import RunStatus, timestamp
from ..seams import audit_bands
from ..stitching import StitchResult
from ..stores import StoreError, VolumeRef, parse_volume, staging_path
from .config import RunConfig
from .planning import (PreparedRun, check_plan_output, check_subvolume_memory, check_writable, prepare,
                       with_stitching)
from .scoring import default_grid, pareto_front, score_regions, score_variants, score_volumes
from .failures import RunEnding, missing_blocks
from .segment import segment_all
from .summary import counts_of, peak_memory, suspicious
from . import provenance
from .values import ExecutorChoice, RunResult, SegmentedSubvolume, Variant
from .write import stitch_and_write, write_grayscale

__all__ = ["compare", "restitch", "run", "tune"]

log = logging.getLogger("labelstitch")

#: a config as accepted by the driver: a file, a dict in file form, or a RunConfig
ConfigSource = RunConfig | str | os.PathLike[str] | dict[str, Any]


# ----------------------------------------------------------------------------- run


@contextmanager
def _run_folder(config: RunConfig) -> Iterator[str]:
    """A folder for the segmented subvolumes of a run without checkpoints, removed at the
    end: beside a file output (``.partial-PID-OUTPUT.run``, which the next run of that
    output removes if this process is killed), else in the system's temporary folder."""
    base = config.output.side_file_base()
    if base is not None:
        staging = staging_path(base)
        folder = staging.with_name(staging.name + ".run")
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = Path(tempfile.mkdtemp(prefix="labelstitch-run-"))
    try:
        yield str(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _spill_folder(held: ExitStack, config: RunConfig, pool: Executor, checkpoints: CheckpointDir | None) -> str | None:
    """Where workers leave segmented subvolumes when there is no checkpoint folder: a run
    folder beside a file output, or (workers on this machine) a temporary folder. None
    (blocks come back to the driver, with a warning) only for workers elsewhere writing to
    a non-file output such as DVID. Workers elsewhere must see the folder they write to:
    a probe file checks it before any work."""
    if checkpoints is not None:
        shared = str(checkpoints.path)
    elif pool.shares_files or config.output.capabilities.local:
        shared = held.enter_context(_run_folder(config))
    else:
        log.warning(
            "the %s executor's workers may run on other machines and the output %s is not a file, so segmented "
            "subvolumes (compressed) come back to the driver; set options.checkpoint-dir to a folder every worker "
            "sees to keep them there", pool.name, config.output,
        )
        return None
    if not pool.shares_files:
        _check_workers_see(pool, shared)
    return None if checkpoints is not None else shared


def _sees(path: str) -> bool:
    return os.path.exists(path)


def _check_workers_see(pool: Executor, folder: str) -> None:
    """Refuse, before any work, a folder the workers cannot see (not on shared storage)."""
    probe = Path(folder) / f".labelstitch-probe-{os.getpid()}-{time.time_ns()}"
    probe.write_text("the driver wrote this; workers check that they see it\n")
    try:
        seen = list(pool.map(_sees, [str(probe)] * 8, describe=lambda _: f"the probe {probe}"))
    finally:
        probe.unlink(missing_ok=True)
    if not all(seen):
        raise StoreError(
            f"the {pool.name} executor's workers do not see {folder}, where segmented subvolumes go: put the output "
            "and options.checkpoint-dir on storage every worker sees (a shared file system), see docs/cluster.md"
        )


def _lock_run(held: ExitStack, config: RunConfig, outputs: tuple[VolumeRef, ...] | None = None) -> None:
    """Hold the locks of the outputs (default: the config's) and of the checkpoint folder
    until ``held`` closes: a second run on either is refused, naming the first."""
    for output in (config.output,) if outputs is None else outputs:
        check_writable(output, "output")  # before the lock file is made beside it
        held.enter_context(hold(output, f"output {output}"))
    if config.checkpoint_dir:
        held.enter_context(hold(config.checkpoint_dir, f"checkpoint folder {config.checkpoint_dir}"))


def run(
    config: ConfigSource,
    *,
    executor: str | Executor = "serial",
    workers: int | None = None,
    spark_master: str | None = None,
    dask_scheduler: str | None = None,
    overwrite: bool = False,
    resume: bool = False,
    create_output: bool = False,
    progress: bool = False,
    stages: tuple[Stage, Stage, Stage] | None = None,
    mask: str | None = None,
) -> RunResult:
    """Run the pipeline for a config (a JSON/YAML file, a dict in file form or a
    :class:`RunConfig`); returns a :class:`RunResult` (output location, per-stage timings,
    counts, VI when the config names a ground truth). The same as ``labelstitch run``.

    ``executor`` is ``"serial"``, ``"processes"``, ``"spark"`` or a plugin's name (an open
    :class:`~labelstitch.executors.Executor` works too, and is left open); the output is the
    same whatever the executor and worker count. ``spark_master`` is the Spark master URL
    (default ``local[*]``); ``dask_scheduler`` the address of a Dask
    scheduler (default: a local cluster for the run). With ``options.checkpoint-dir`` every finished subvolume is
    checkpointed; ``resume=True`` continues a run that crashed, and may write over an
    output that this same config had started to write. ``create_output`` creates a
    missing DVID labels instance. ``progress=True`` shows progress bars on stderr.
    ``stages`` (resolved stage callables) and ``mask`` (a bool volume of voxels to leave
    unlabelled) are for :func:`labelstitch.segment`, which takes Python callables.

    Raises
    ------
    ConfigError, StoreError, PluginError, CheckpointError, ValueError
        Before anything is written: a bad config, a missing or malformed volume, an unknown
        plugin or parameter, an existing output without ``overwrite``, checkpoints of
        another config or plan, a committed DVID node, a missing DVID output without
        ``create_output``, a plan not aligned to a DVID output's blocks.
    PipelineError
        A stage function returned the wrong shape or dtype (the staged output is discarded).
    ExecutorError
        A worker died or the cluster went away (finished checkpoints are kept).
    """
    t0, started = time.perf_counter(), timestamp()
    config = RunConfig.load(config)
    prepared = prepare(config, stages=stages, extra_mask=parse_volume(mask) if mask is not None else None)
    plan = prepared.plan
    extra = (prepared.grayscale_copy,) if prepared.grayscale_copy is not None else ()
    with ExitStack() as held:
        _lock_run(held, config, outputs=(config.output, *extra))
        inputs, models = provenance.made_from(config, prepared.task.stages)
        record = provenance.entry("resume" if resume else "run", config.to_dict(), config.settings_hash, inputs, models,
                                  str(executor), started)
        existing = provenance.output_metadata(config.output)
        # a resume may write over the output this same config had started to write
        overwrite = overwrite or (resume and existing.get("config-hash") == config.settings_hash)
        if not overwrite:
            provenance.check_same_making(config.output, existing, record)
        for uri in (config.output, *extra):
            check_plan_output(prepared, uri, overwrite=overwrite, create_output=create_output)
        if resume and not config.checkpoint_dir:
            raise ValueError("resume needs options.checkpoint-dir: there is nothing to resume from")
        seconds = {"check and plan": time.perf_counter() - t0}
        ending = held.enter_context(RunEnding())  # before the pool: it ends after the workers are stopped
        pool = held.enter_context(ExecutorChoice(executor, workers, spark_master, dask_scheduler).opened())
        # with the workers known, before the checkpoint folder is made
        check_subvolume_memory(plan, prepared.task.stages, at_once=pool.items_at_once, context=prepared.task.context)
        checkpoints = None
        if config.checkpoint_dir:
            checkpoints = CheckpointDir.open(config.checkpoint_dir, plan, config.segmentation_settings(), resume=resume,
                                             inputs=provenance.bound_inputs(inputs, models))
        spill = _spill_folder(held, config, pool, checkpoints)
        status = RunStatus(checkpoints.path, len(plan), pool.name) if checkpoints is not None else None
        ending.status, ending.checkpoints = status, checkpoints
        start = time.perf_counter()
        segmented, stats = segment_all(plan, prepared.task, pool, checkpoints=checkpoints, spill=spill, progress=progress,
                                       status=status)
        seconds["segment"] = time.perf_counter() - start
        if stats.failures:
            missing_blocks(prepared, segmented, stats.failures, pool)
        if status is not None:
            status.step("stitch and write")
        parts: dict[str, Any] = {}
        if stats.restored:
            parts["verify checkpoints"] = stats.verify_seconds
        if plan.iterations > 1:
            for k, sec in enumerate(stats.iteration_seconds):
                parts[f"iteration {k}"] = sec
        parts["stages"] = {stage: sum(s.seconds.get(stage, 0.0) for s in segmented.values())
                           for stage in ("read", "predict-voxels", "create-supervoxels", "agglomerate-supervoxels")}
        record = {**record, "executor": pool.name, "seconds": {k: round(v, 3) for k, v in seconds.items()},
                  "stage seconds": {k: round(v, 3) for k, v in parts["stages"].items()},
                  "hosts": sorted({s.worker for s in segmented.values() if s.worker} | {record["driver"]}),
                  "counts": {"subvolumes": len(plan), "segmented now": stats.computed, "restored": stats.restored,
                             "retried": stats.retried, "failed": len(stats.failures)},
                  "missing boxes": [f.box for f in stats.failures]}
        history = provenance.history_of(existing, config.settings_hash) if resume else []
        result, more = stitch_and_write(prepared, segmented, pool, overwrite=overwrite, create_output=create_output,
                                        progress=progress, provenance=(history, record))
        seconds.update(more)
        if config.write_grayscale:
            start = time.perf_counter()
            write_grayscale(prepared, pool, overwrite=overwrite, progress=progress)
            seconds["write grayscale"] = time.perf_counter() - start
    vi = None
    if config.ground_truth is not None:
        start = time.perf_counter()
        with config.output.open() as seg, config.ground_truth.open() as gt:
            vi = score_volumes(seg, gt)
        seconds["evaluate"] = time.perf_counter() - start
    seconds["total"] = time.perf_counter() - t0
    counts = counts_of(prepared, segmented, stats.computed, stats.restored, result)
    counts.update({"retried": stats.retried, "failed": len(stats.failures)})
    if stats.restored and stats.verify_seconds:
        restored_bytes = sum(plan[sv].outer.size * 8 for sv, s in segmented.items() if not s.seconds)
        counts["restore MB/s"] = round(restored_bytes / 1e6 / stats.verify_seconds, 1)
    counts.update(peak_memory())
    paths = report_paths(config.output, config.checkpoint_dir)
    return RunResult(
        config.output.text, plan, seconds, counts, vi, result.summary(),
        str(checkpoints.path) if checkpoints is not None else None,
        str(paths["md"]) if paths is not None else None,
        prepared.intensity_note,
        suspicious(prepared, segmented, result), parts, stats.failures,
    )


# ----------------------------------------------------------------------------- from checkpoints


def _finished_subvolumes(prepared: PreparedRun, made: tuple[dict[str, Any], dict[str, str]] | None = None
                         ) -> dict[int, SegmentedSubvolume]:
    """Every subvolume's verified checkpoint, or a CheckpointError naming what is missing
    (``made``: the inputs' signatures and model checksums, when the caller has them)."""
    config, plan = prepared.config, prepared.plan
    folder = config.checkpoint_dir
    if not folder:
        raise CheckpointError("re-stitching needs options.checkpoint-dir: the segmented subvolumes are read from there")
    inputs, models = made or provenance.made_from(config, prepared.task.stages)
    checkpoints = CheckpointDir.open(folder, plan, config.segmentation_settings(), resume=True,
                                     inputs=provenance.bound_inputs(inputs, models))
    states = checkpoints.verify()
    bad = {sv: state for sv, state in states.items() if state != "ok"}
    if bad:
        listed = ", ".join(f"{sv} ({state})" for sv, state in list(bad.items())[:5])
        raise CheckpointError(
            f"{len(bad)} subvolumes have no usable checkpoint in {folder}: {listed}; "
            "finish the run with `labelstitch run CONFIG --resume` first"
        )
    return {sv.id: SegmentedSubvolume.from_checkpoint(sv.id, checkpoints.block_path(sv.id)) for sv in plan}


def _variant(config: RunConfig, rule: str | None, rule_params: dict[str, Any] | None,
             output: VolumeRef | str | None) -> RunConfig:
    """The config with another rule (and its parameters: none given means the defaults)
    and output; unchanged where None."""
    changes: dict[str, Any] = {}
    if rule is not None:
        changes.update(rule=rule, rule_params=dict(rule_params or {}))
    if output is not None:
        changes["output"] = output
    return config.replace(**changes)


def restitch(
    config: ConfigSource,
    *,
    rule: str | None = None,
    rule_params: dict[str, Any] | None = None,
    output: str | None = None,
    overwrite: bool = False,
    create_output: bool = False,
    executor: str | Executor = "serial",
    workers: int | None = None,
    spark_master: str | None = None,
    dask_scheduler: str | None = None,
    progress: bool = False,
) -> tuple[StitchResult, dict[str, float]]:
    """Stitch again from a finished run's checkpoints, with another rule or parameters,
    without segmenting anything (``labelstitch stitch``). ``rule`` (with ``rule_params``;
    none given means the rule's defaults) and ``output`` default to the config's; the
    output's metadata records what was used. Returns the :class:`~labelstitch.StitchResult`
    and the seconds per step.

    Raises
    ------
    CheckpointError
        If the config has no checkpoint folder, or a subvolume's checkpoint is missing or
        does not verify (finish the run with ``labelstitch run --resume`` first).
    """
    started = timestamp()
    config = _variant(RunConfig.load(config), rule, rule_params, output)
    prepared = prepare(config)
    with ExitStack() as held:
        _lock_run(held, config)
        check_plan_output(prepared, config.output, overwrite=overwrite, create_output=create_output)
        inputs, models = provenance.made_from(config, prepared.task.stages)
        segmented = _finished_subvolumes(prepared, (inputs, models))
        pool = held.enter_context(ExecutorChoice(executor, workers, spark_master, dask_scheduler).opened())
        record = provenance.entry("stitch", config.to_dict(), config.settings_hash, inputs, models, pool.name, started)
        history = provenance.history_of(provenance.output_metadata(config.output), config.settings_hash)
        return stitch_and_write(prepared, segmented, pool, overwrite=overwrite, create_output=create_output,
                                progress=progress, provenance=(history, record))


def compare(
    config: ConfigSource,
    ground_truth: str,
    *,
    variants: list[tuple[str, str, dict[str, Any]]] | None = None,
    region: int = 32,
    folder: str | None = None,
    write: bool = False,
    executor: str | Executor = "serial",
    workers: int | None = None,
    spark_master: str | None = None,
    dask_scheduler: str | None = None,
    progress: bool = False,
) -> list[Score]:
    """Stitch a finished run's checkpoints with every rule (and any extra ``(name, rule,
    params)`` variants) and score each against ``ground_truth``: one
    :class:`~labelstitch.Score` per variant (VI merge/split, bodies, matches, seconds, and VI
    per ``region``-sized block for the paper's Figure 9); :func:`~labelstitch.format_scores`
    prints them as the paper's Table 2. The same as ``labelstitch compare``.

    By default nothing is written: each subvolume interior's contingency table against the
    ground truth is made once, every face is matched with every variant in one pass, and
    each variant's VI follows from pushing the tables through its mapping (the same numbers
    as scoring the written volumes). With ``write`` each variant is also written to
    ``folder`` (default: ``CHECKPOINTS-compare/`` beside the checkpoint folder) as
    ``NAME.zarr`` and scored from there; every variant and the ground truth's shape are
    checked before the first is written.
    """
    config = RunConfig.load(config)
    chosen = [(rule, rule, {}) for rule in available_rules()] + list(variants or [])
    truth = parse_volume(ground_truth)
    base = _prepare_scoring(config, truth)
    if not write:
        wanted = [Variant(name, rule, dict(params), config.connected_components) for name, rule, params in chosen]
        return _score_without_writing(base, truth, wanted, region, ExecutorChoice(executor, workers, spark_master, dask_scheduler), progress)
    if folder is None and config.checkpoint_dir:
        checkpoints = Path(config.checkpoint_dir)  # a folder path (Path drops a trailing slash)
        folder = str(checkpoints.with_name(checkpoints.name + "-compare"))
    where = Path(folder or "compare")
    with ExitStack() as held:
        outputs = {name: parse_volume(where / f"{name}.zarr") for name, _, _ in chosen}
        _lock_run(held, config, outputs=tuple(outputs.values()))
        segmented = _finished_subvolumes(base)
        prepared = []
        for name, rule, params in chosen:  # every variant is checked before anything is written
            variant = with_stitching(base, _variant(config, rule, params, outputs[name]))
            check_plan_output(variant, variant.config.output, overwrite=True)
            prepared.append((name, variant))
        where.mkdir(parents=True, exist_ok=True)
        rows = []
        pool = held.enter_context(ExecutorChoice(executor, workers, spark_master, dask_scheduler).opened())
        gt = held.enter_context(truth.open())
        for name, variant in prepared:
            start = time.perf_counter()
            result, _ = stitch_and_write(variant, segmented, pool, overwrite=True, progress=progress)
            seconds = time.perf_counter() - start
            with variant.config.output.open() as seg:
                score = score_volumes(seg, gt)
                regional = score_regions(seg, gt, region)
                bands = audit_bands(variant.plan, lambda box: (seg.read(box), gt.read(box))) if variant.plan.faces() else None
            rows.append(Score(score.merge, score.split, bodies=result.n_bodies, name=name, rule=variant.config.rule,
                              params=dict(variant.config.rule_params), matches=len(result.matches), seconds=seconds,
                              output=variant.config.output.text, regional=regional,
                              seams=(bands.faces.total, bands.interiors.total) if bands else None))
    return rows



def tune(
    config: ConfigSource,
    ground_truth: str,
    *,
    grid: dict[str, dict[str, list[Any]]] | None = None,
    executor: str | Executor = "serial",
    workers: int | None = None,
    spark_master: str | None = None,
    dask_scheduler: str | None = None,
    progress: bool = False,
) -> tuple[list[Score], list[Score]]:
    """Search the stitching rules' parameters on a finished run and return every scored
    setting and its Pareto front (settings no other beats on both false merges and false
    splits), front sorted by false merge. The same as ``labelstitch tune``.

    ``grid`` maps each rule to the values to try per parameter (default:
    :func:`default_grid`); every combination is tried with connected components off and on. All settings are scored in one pass (see
    :func:`compare`), so hundreds cost little more than one.
    """
    import itertools

    truth = parse_volume(ground_truth)
    base = _prepare_scoring(RunConfig.load(config), truth)
    if grid is None:
        grid = {rule: default_grid(rule) for rule in available_rules()}
    wanted = []
    for rule, values in grid.items():
        keys = sorted(values)
        for combo in itertools.product(*(values[k] for k in keys)):
            params = dict(zip(keys, combo))
            for cc in (False, True):
                label = ",".join(f"{k}={v:g}" for k, v in params.items())
                name = f"{rule}{'+cc' if cc else ''}" + (f":{label}" if label else "")
                wanted.append(Variant(name, rule, params, cc))
    scores = _score_without_writing(base, truth, wanted, 32, ExecutorChoice(executor, workers, spark_master, dask_scheduler), progress)
    return scores, pareto_front(scores)


def _prepare_scoring(config: RunConfig, ground_truth: VolumeRef) -> PreparedRun:
    """The prepared run, after checking that the ground truth covers its volume."""
    base = prepare(config)
    with ground_truth.open() as gt:
        if gt.shape != base.plan.shape:
            raise StoreError(f"ground truth {ground_truth} has shape {gt.shape}; the run's volume has {base.plan.shape}")
    return base


def _score_without_writing(
    base: PreparedRun, ground_truth: VolumeRef, wanted: list[Variant], region: int, where: ExecutorChoice, progress: bool,
) -> list[Score]:
    """Every variant scored from the checkpoints' contingency tables (after refusing unknown
    rules and parameters, before any work)."""
    for v in wanted:
        with_stitching(base, _variant(base.config, v.rule, v.params, None))
    with ExitStack() as held:
        segmented = _finished_subvolumes(base)
        pool = held.enter_context(where.opened())
        scored, _ = score_variants(base, segmented, pool, ground_truth, wanted, region=region, progress=progress)
    return [score for score, _ in scored]
