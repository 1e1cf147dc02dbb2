"""How a run ends when subvolumes fail or a signal stops it.

:func:`missing_blocks` decides what subvolumes that failed every try mean for the output:
no output (:class:`~labelstitch.pipeline.BlocksFailed`, with the failure table and, for a
worker killed by SIGKILL, the chunk size that would fit), or empty stand-ins with
``options.allow-missing-blocks``. :class:`RunEnding` records how the run ended in its
status file, after the workers are stopped, and removes the checkpoint folder's staging.
"""

from __future__ import annotations

import logging

from ..checkpoints import CheckpointDir
from ..executors import Executor, stop_requested
from ..runstatus import RunStatus, failure_table
from .planning import PreparedRun, fitting_chunk_size
from .segment import BlocksFailed, describe_item, empty_subvolume
from .values import BlockFailure, SegmentedSubvolume

__all__ = ["RunEnding", "missing_blocks"]

log = logging.getLogger("labelstitch")


class RunEnding:
    """How a run ends, once its workers are stopped: the checkpoint folder's staging files
    removed after an error or a signal, and the run status saying finished, failed or
    interrupted."""

    def __init__(self) -> None:
        self.status: RunStatus | None = None
        self.checkpoints: CheckpointDir | None = None

    def __enter__(self) -> RunEnding:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is not None and self.checkpoints is not None:
            self.checkpoints.remove_staging()  # half-written blocks of the stopped workers
        # a signal's exception that Python dropped (raised in a garbage-collector callback or a
        # __del__, where it cannot propagate): the failure of the stopped workers is its echo
        echo = exc is not None and not isinstance(exc, (KeyboardInterrupt, SystemExit))
        stop = stop_requested() if echo else None
        if self.status is not None:
            self._record(stop or exc)
        if stop is not None:
            raise stop from exc

    def _record(self, exc: BaseException | None) -> None:
        assert self.status is not None
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            self.status.end("interrupted", f"stopped ({exc or type(exc).__name__}); finished subvolumes are kept: "
                                           "continue with `labelstitch run CONFIG --resume`")
        elif exc is not None:
            self.status.end("failed", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        else:
            missing = len(self.status.data["failed"])
            self.status.end("finished with missing blocks" if missing else "finished",
                            f"{missing} failed subvolumes were left empty; after the fix, --resume segments them"
                            if missing else "")


def missing_blocks(prepared: PreparedRun, segmented: dict[int, SegmentedSubvolume], failures: list[BlockFailure],
                    pool: Executor) -> None:
    """Subvolumes failed every try: refuse to write (the failure table says which and why),
    or, with ``options.allow-missing-blocks``, stand in empty blocks for them and say so."""
    config, plan = prepared.config, prepared.plan
    table = failure_table([f.to_dict() for f in failures])
    advice = ""
    if any("SIGKILL" in f.error or "out-of-memory" in f.error for f in failures):
        side = fitting_chunk_size(plan, prepared.task.stages, at_once=pool.items_at_once or 1)
        advice = (f" A worker killed by SIGKILL most often ran out of memory: options.chunk-size {list(plan.block)} "
                  f"-> at most {min(side, int(max(plan.block) / 1.26))} would fit (or fewer --workers).")
    kept = (f"the {len(segmented)} finished subvolumes are checkpointed in {config.checkpoint_dir}; after the fix, "
            "`labelstitch run CONFIG --resume` segments only the failed ones" if config.checkpoint_dir else
            "without options.checkpoint-dir the finished subvolumes are not kept: set it to keep them next time")
    if not config.allow_missing_blocks:
        raise BlocksFailed(
            f"{len(failures)} of {len(plan)} subvolumes failed after {prepared.task.retries} retries, so no output was "
            f"written (options.allow-missing-blocks writes the rest); {kept}.{advice}\n{table}", failures)
    log.warning("%d subvolumes failed after %d retries and are left empty in %s (options.allow-missing-blocks): %s; %s.%s",
                len(failures), prepared.task.retries, config.output, ", ".join(f.box for f in failures), kept, advice)
    by_id = {sv.id: sv for sv in plan}
    items = [(by_id[f.sv_id], prepared.task) for f in failures]
    for empty in pool.map(empty_subvolume, items, describe=describe_item):
        segmented[empty.sv_id] = empty
