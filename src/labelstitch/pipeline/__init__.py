"""The segmentation pipeline, one module per step of the seed paper's workflow.

==================  ===========================================================================
``options.py``      the one table of config options, and what is made from it (schema, docs)
``config.py``       the run configuration: loading, the frozen :class:`RunConfig`
``values.py``       the values the steps hand each other (task, segmented subvolume, variant, ...)
``planning.py``     step 1: plan the subvolumes and check everything before any work
``segment.py``      step 2: segment one subvolume (worker side) and the loop over all of them
``stitch.py``       step 4: slabs, matching and resolution (also ``labelstitch.stitch``)
``write.py``        step 5: relabel every interior and write it to a staged output
``driver.py``       ``run``, ``restitch``, ``compare`` and ``tune``: short compositions of the steps
``failures.py``     subvolumes that failed every try, and how a run ends (its status file)
``provenance.py``   how an output was made: its history of runs, ``labelstitch info``
``shapes.py``       meshes and skeletons of every body, subvolume by subvolume (``mesh``, ``skeletonize``)
``scoring.py``      VI of stored volumes, of stitching variants from contingency tables, tuning
``progress.py``     progress bars
==================  ===========================================================================

Step 3 (checkpoints) lives in :mod:`labelstitch.checkpoints`, below the pipeline.
"""

from __future__ import annotations

from .config import EXAMPLE, SCHEMA, ConfigError, RunConfig, StageConfig, load_config
from .driver import compare, restitch, run, tune
from .planning import PreparedRun, check_plan_output, prepare
from .shapes import ShapeSummary, check_shapes_work, keeps_supervoxels, mesh, skeletonize
from .scoring import Audit, audit, evaluate_skeletons, pareto_front, score_floor, score_regions, score_volumes
from .segment import BlocksFailed, PipelineError, segment_all, segment_subvolume
from .values import BlockFailure, ExecutorChoice, PreservedBodies, RunResult, SegmentedSubvolume, SegmentTask, Variant

__all__ = [
    "EXAMPLE",
    "Audit",
    "SCHEMA",
    "BlockFailure",
    "BlocksFailed",
    "ConfigError",
    "ExecutorChoice",
    "ShapeSummary",
    "PipelineError",
    "PreservedBodies",
    "PreparedRun",
    "RunConfig",
    "RunResult",
    "SegmentTask",
    "SegmentedSubvolume",
    "StageConfig",
    "Variant",
    "audit",
    "check_plan_output",
    "check_shapes_work",
    "compare",
    "evaluate_skeletons",
    "keeps_supervoxels",
    "load_config",
    "mesh",
    "pareto_front",
    "prepare",
    "restitch",
    "run",
    "score_regions",
    "score_floor",
    "score_volumes",
    "segment_all",
    "segment_subvolume",
    "skeletonize",
    "tune",
]
