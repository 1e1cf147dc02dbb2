"""labelstitch: segment very large EM volumes block by block and stitch the blocks.

The public API is re-exported here; everything else is private. See README.md and
docs/ for the pipeline and the stitching rules.
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from . import metrics
from .api import Comparison, Evaluation, compare, evaluate, run, segment
from .geometry import Box, Face, Plan, Subvolume
from .matching import FaceReport, Reason, available_rules, match_slabs, register_rule, rule_parameters
from .metrics import vi, vi_by_region
from .contingency import Overlaps, label_counts, overlaps
from .relabel import remap
from .resolve import LabelMapping, resolve
from .stitching import Match, MatchTable, StitchResult, stitch
from .watershed import watershed

try:
    __version__ = _version("labelstitch")
except _PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "Box",
    "Comparison",
    "Evaluation",
    "Face",
    "FaceReport",
    "LabelMapping",
    "Match",
    "MatchTable",
    "Overlaps",
    "Plan",
    "Reason",
    "StitchResult",
    "Subvolume",
    "available_rules",
    "compare",
    "evaluate",
    "label_counts",
    "match_slabs",
    "metrics",
    "overlaps",
    "register_rule",
    "remap",
    "resolve",
    "rule_parameters",
    "run",
    "segment",
    "stitch",
    "vi",
    "vi_by_region",
    "watershed",
    "__version__",
]
