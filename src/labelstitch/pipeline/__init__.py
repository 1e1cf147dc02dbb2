"""The segmentation pipeline, one module per step of the seed paper's workflow.

==================  ===========================================================================
``config.py``       the run configuration: JSON/YAML schema, loading, the frozen :class:`RunConfig`
``planning.py``     step 1: plan the subvolumes and check everything before any work
``segment.py``      step 2: segment one subvolume (worker side) and the loop over all of them
``stitch.py``       step 4: slabs, matching, resolution, relabelling and the staged write
``driver.py``       ``run``, ``restitch``, ``compare`` and ``tune``: short compositions of the steps
``scoring.py``      score stitching variants from per-subvolume contingency tables, writing nothing
``progress.py``     progress bars
==================  ===========================================================================

Step 3 (checkpoints) lives in :mod:`labelstitch.checkpoints`, below the pipeline.
"""

from __future__ import annotations

from .config import EXAMPLE, SCHEMA, ConfigError, RunConfig, StageConfig, load_config
from .driver import RunResult, compare, pareto_front, restitch, run, score_floor, score_regions, score_volumes, tune
from .planning import PreparedRun, check_plan_output, prepare
from .segment import PipelineError, SegmentedSubvolume, SegmentTask, segment_all, segment_subvolume

__all__ = [
    "EXAMPLE",
    "SCHEMA",
    "ConfigError",
    "PipelineError",
    "PreparedRun",
    "RunConfig",
    "RunResult",
    "SegmentTask",
    "SegmentedSubvolume",
    "StageConfig",
    "check_plan_output",
    "compare",
    "load_config",
    "pareto_front",
    "prepare",
    "restitch",
    "run",
    "score_regions",
    "score_floor",
    "score_volumes",
    "segment_all",
    "segment_subvolume",
    "tune",
]
