"""labelstitch: segment very large EM volumes block by block and stitch the blocks.

The public API is re-exported here; everything else is private. See README.md and
docs/ for the pipeline and the stitching rules, and docs/architecture.md for the layers.
"""

from . import metrics
from ._version import __version__
from .api import agglomeration_floor, audit, compare, evaluate, evaluate_skeletons, info, mesh, restitch, run, run_status, segment, skeletonize, train, tune, view
from .contingency import Overlaps, label_counts, overlaps
from .geometry import Box, Face, Plan, Subvolume
from .hookspecs import Channel, StageInfo, hookimpl, stage_function
from .matching import FaceReport
from .metrics import Score, format_scores, vi, vi_by_region
from .pipeline import RunConfig, RunResult
from .pipeline.stitch import stitch
from .plugins.rules import available_rules, match_slabs, register_rule, rule_parameters
from .relabel import remap
from .resolve import LabelMapping, resolve
from .rules import Reason
from .stitching import Match, MatchTable, StitchResult
from .watershed import watershed

__all__ = [
    "Box",
    "Channel",
    "Face",
    "FaceReport",
    "LabelMapping",
    "Match",
    "MatchTable",
    "Overlaps",
    "Plan",
    "Reason",
    "RunConfig",
    "RunResult",
    "Score",
    "StageInfo",
    "StitchResult",
    "Subvolume",
    "agglomeration_floor",
    "audit",
    "available_rules",
    "compare",
    "evaluate",
    "evaluate_skeletons",
    "format_scores",
    "hookimpl",
    "info",
    "label_counts",
    "match_slabs",
    "mesh",
    "metrics",
    "overlaps",
    "register_rule",
    "remap",
    "resolve",
    "restitch",
    "rule_parameters",
    "run",
    "run_status",
    "segment",
    "skeletonize",
    "stage_function",
    "stitch",
    "train",
    "tune",
    "vi",
    "vi_by_region",
    "view",
    "watershed",
    "__version__",
]
