"""The one table of config options: every key a run config can hold, stated once.

Each :class:`Option` row gives the key path in a config file, the Python name of its
:class:`~labelstitch.pipeline.config.RunConfig` field, the JSON-schema fragment of its
value, its default, its unit, whether it changes the segmented labels (and so the
checkpoints' fingerprint) and its help text. From :data:`OPTIONS` come the JSON schema
(:data:`SCHEMA`), the defaults, :data:`KEYS`, the fields of ``RunConfig`` and its file
form, the segmentation-settings fingerprint, ``labelstitch config --example``
(:data:`EXAMPLE`) and the key table of docs/pipeline.md (:func:`markdown_table`;
``labelstitch config --keys``).

Adding an option is one row here, plus the code that reads ``config.<name>``.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..hookspecs import STAGES
from ..stores import VolumeRef, parse_volume, roi_ref

__all__ = [
    "EXAMPLE", "KEYS", "OPTIONS", "Option", "REQUIRED", "SCHEMA", "StageConfig", "example_of", "fields_of", "keys_of",
    "markdown_table", "schema_of",
]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: the default of an option that has none: the config must give it
REQUIRED: Any = _Required()
#: the value of an option a config left out (no default and not required)
UNSET: Any = None


@dataclass(frozen=True)
class StageConfig:
    """One segmentation stage as configured: a registered name or dotted path, and its parameters."""

    function: str
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Kind:
    """How an option's value looks in Python and in a file.

    ``to_python(value, base, values)`` takes the file form (or a Python value, given as it
    is) with the config file's folder ``base`` and the fields converted before it;
    ``to_file(value)`` gives the JSON form back.
    """

    to_python: Callable[[Any, Path, dict[str, Any]], Any]
    to_file: Callable[[Any], Any]
    annotation: str


def _same(value: Any, base: Path, values: dict[str, Any]) -> Any:
    return copy.deepcopy(value)


def _tuple_of(cast: Callable[[Any], Any]) -> Callable[[Any, Path, dict[str, Any]], Any]:
    def convert(value: Any, base: Path, values: dict[str, Any]) -> Any:
        return tuple(cast(v) for v in value) if isinstance(value, (list, tuple)) else value
    return convert


def _listed(value: Any) -> Any:
    return [_listed(v) for v in value] if isinstance(value, tuple) else copy.deepcopy(value)


def _volume(value: Any, base: Path, values: dict[str, Any]) -> Any:
    return parse_volume(value, base) if isinstance(value, (str, os.PathLike)) else value


def _folder(value: Any, base: Path, values: dict[str, Any]) -> Any:
    if value is None:
        return None
    value = os.fspath(value)
    return value if Path(value).is_absolute() else str(base / value)


def _stages(value: Any, base: Path, values: dict[str, Any]) -> tuple[StageConfig, ...]:
    if isinstance(value, tuple):
        return value
    return tuple(StageConfig(value[s]["function"], dict(value[s].get("parameters", {}))) for s in STAGES)


def _stages_file(value: tuple[StageConfig, ...]) -> dict[str, Any]:
    return {s: {"function": c.function, "parameters": copy.deepcopy(c.parameters)} for s, c in zip(STAGES, value)}


def _roi(value: Any, base: Path, values: dict[str, Any]) -> Any:
    """A DVID roi: a full string, or a name on the input's node (needs ``input`` first)."""
    return roi_ref(value, beside=values["input"]) if isinstance(value, str) else value


def _text(value: Any) -> Any:
    return value.text if isinstance(value, VolumeRef) else value


def _volumes(value: Any, base: Path, values: dict[str, Any]) -> Any:
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    return tuple(parse_volume(v, base) if isinstance(v, (str, os.PathLike)) else v for v in value or ())


def _channel_dicts(value: Any, base: Path, values: dict[str, Any]) -> Any:
    return tuple(dict(c) for c in value or ())


PLAIN = Kind(_same, copy.deepcopy, "Any")
VOLUMES = Kind(_volumes, lambda v: [_text(r) for r in v], "tuple[VolumeRef, ...]")
CHANNELS = Kind(_channel_dicts, lambda v: [dict(c) for c in v], "tuple[dict[str, Any], ...]")
VOLUME = Kind(_volume, _text, "VolumeRef")
ROI = Kind(_roi, _text, "VolumeRef")
FOLDER = Kind(_folder, copy.deepcopy, "str")
SIZE = Kind(_tuple_of(int), _listed, "int | tuple[int, int, int]")
BOX = Kind(_tuple_of(tuple), _listed, "tuple[tuple[int, int, int], tuple[int, int, int]]")
IDS = Kind(lambda v, b, vs: tuple(int(i) for i in v or ()), list, "tuple[int, ...]")
FLOATS = Kind(_tuple_of(float), _listed, "tuple[float, float, float]")
PAIR = Kind(_tuple_of(lambda v: v), _listed, "str | tuple[float, float]")
STAGE_LIST = Kind(_stages, _stages_file, "tuple[StageConfig, StageConfig, StageConfig]")


@dataclass(frozen=True, eq=False)
class Option:
    """One config key. ``name`` is the RunConfig field (None: a key translated at load into
    other fields, such as ``dvid-info``); ``fingerprint`` is ``"always"`` when the value
    decides the segmented labels, ``"unless-default"`` when it does but is left out of
    the fingerprint at its default (so older checkpoints keep theirs), or ``""``."""

    key: str
    name: str | None
    schema: dict[str, Any]
    help: str
    default: Any = UNSET
    kind: Kind = PLAIN
    unit: str = ""
    fingerprint: str = ""
    #: the value ``labelstitch config --example`` shows (REQUIRED: not shown)
    example: Any = REQUIRED
    #: the default as the docs say it, where the value alone would not say enough
    described_default: str = ""
    #: required within its section (``preserve-bodies`` needs both of its keys)
    required_in_section: bool = False

    @property
    def python_default(self) -> Any:
        return self.kind.to_python(self.default, Path.cwd(), {}) if self.default not in (REQUIRED, None) else self.default


_STAGE = {
    "type": "object",
    "properties": {
        "function": {"type": "string", "minLength": 1, "description": "a registered name or a dotted path"},
        "parameters": {"type": "object", "description": "keyword arguments of the function"},
    },
    "required": ["function"],
    "additionalProperties": False,
}
_TRIPLE = {"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 3}
_SIZE = {"oneOf": [{"type": "integer", "minimum": 1}, {**_TRIPLE, "items": {"type": "integer", "minimum": 1}}]}
_DVID_INFO = {
    "type": "object",
    "properties": {
        "dvid-server": {"type": "string", "minLength": 1, "description": "HOST:PORT"},
        "uuid": {"type": "string", "minLength": 1, "description": "the node (a unique UUID prefix will do)"},
        "segmentation-name": {"type": "string", "minLength": 1, "description": "the labels instance to write"},
        "grayscale": {"type": "string", "minLength": 1, "description": "the uint8blk instance to read"},
        "roi": {"type": "string", "minLength": 1, "description": "a roi instance: segment only its blocks"},
        "segmentation-type": {"enum": ["labelblk", "labelarray", "labelmap"], "description": "type of a created output"},
        "segmentation-block-size": {"type": "integer", "minimum": 8, "description": "block size of a created output"},
    },
    "required": ["dvid-server", "uuid", "segmentation-name", "grayscale"],
    "additionalProperties": False,
}
#: the untrained segmentor of a config that names none: the best of the untrained stages'
#: settings on synthetic EM and gala_train, checked on another synthetic volume and gala_test
#: (benchmarks/quality_defaults.py, docs/quality.md "Untrained defaults")
DEFAULT_STAGES = {
    "predict-voxels": {"function": "naive_membrane_predictions", "parameters": {}},
    "create-supervoxels": {"function": "seeded_watershed", "parameters": {"seed_threshold": 0.3, "min_segment_size": 50}},
    "agglomerate-supervoxels": {"function": "rag_agglomeration", "parameters": {"threshold": 0.4}},
}
_EXAMPLE_STAGES = {
    "predict-voxels": {"function": "naive_membrane_predictions", "parameters": {"sigma": 0.0}},
    "create-supervoxels": {
        "function": "seeded_watershed",
        "parameters": {"boundary_channel": 0, "seed_threshold": 0.3, "seed_size": 5, "min_segment_size": 50},
    },
    "agglomerate-supervoxels": {"function": "rag_agglomeration", "parameters": {"threshold": 0.4}},
}

SEGMENTOR_FILE = ("the segmentation stages, or the path (relative to the config) of a segmentor file that "
                  "`labelstitch train` wrote (DIR/segmentor.json)")

#: every config key, in the order of docs/pipeline.md
OPTIONS: tuple[Option, ...] = (
    Option("input", "input", {"type": "string"}, "grayscale volume (any volume string below)",
           REQUIRED, VOLUME, fingerprint="always", example="grayscale.zarr", described_default="required"),
    Option("output", "output", {"type": "string"}, "where the segmentation is written (uint64 labels)",
           REQUIRED, VOLUME, example="segmentation.zarr", described_default="required"),
    Option("predictions", "predictions",
           {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]},
           "voxel predictions made elsewhere (e.g. by a network on a GPU), one volume per channel, float in [0, 1] or "
           "uint8: read for each subvolume with its halo and context instead of running predict-voxels "
           "([pipeline.md](#predictions-made-elsewhere))", (), VOLUMES, fingerprint="unless-default",
           described_default="none (predict-voxels runs)"),
    Option("roi", "roi_box", {"type": "array", "items": _TRIPLE, "minItems": 2, "maxItems": 2},
           "`[[z0, y0, x0], [z1, y1, x1]]`: segment only this box", kind=BOX, unit="voxels", fingerprint="always",
           described_default="whole volume"),
    Option("ground-truth", "ground_truth", {"type": "string"}, "label volume to score against (VI, gt 0 ignored)",
           kind=VOLUME, example="groundtruth.npy", described_default="none"),
    Option("preserve-bodies.segmentation", "preserve_volume", {"type": "string"},
           "an existing label volume whose bodies `preserve-bodies.bodies` are kept as they are",
           kind=VOLUME, fingerprint="always", required_in_section=True, described_default="none"),
    Option("preserve-bodies.bodies", "preserve_bodies", {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1},
           "the ids of the preserved bodies", default=(), kind=IDS, fingerprint="always", required_in_section=True,
           described_default="none"),
    Option("options.segmentor.class", None, {"type": "string"},
           "accepted (and ignored) so that DVIDSparkServices configs load", described_default="none"),
    Option("options.segmentor.configuration", "stages",
           {"type": "object", "properties": {s: _STAGE for s in STAGES}, "additionalProperties": False},
           "`{\"<stage>\": {\"function\": NAME or dotted.path, \"parameters\": {...}}}` for the three stages; or give "
           "`options.segmentor` as the path of a segmentor file `labelstitch train` wrote, relative to the config",
           DEFAULT_STAGES, STAGE_LIST, fingerprint="always", example=_EXAMPLE_STAGES, described_default="see below"),
    Option("options.prediction-channels", "prediction_channels",
           {"type": "array", "items": {"type": "object", "properties": {
               "meaning": {"type": "string", "minLength": 1}, "offset": _TRIPLE}, "required": ["meaning"],
               "additionalProperties": False}},
           "what each `predictions` volume means, in order: `{\"meaning\": \"boundary\"}`, `{\"meaning\": "
           "\"affinity\", \"offset\": [-1, 0, 0]}`, `mitochondria`, ...; checked against what the stages read", (),
           CHANNELS, fingerprint="unless-default", described_default="one `boundary` volume"),
    Option("options.stitch-algorithm", "rule", {"type": "string"},
           "`none`, `conservative`, `medium`, `aggressive` or a plugin rule", "medium", example="medium"),
    Option("options.stitch-parameters", "rule_params", {"type": "object"},
           "the rule's thresholds, e.g. `{\"min_overlap\": 100}`", {}, described_default="rule defaults"),
    Option("options.stitch-connected-components", "connected_components", {"type": "boolean"},
           "split segments into connected pieces in each overlap", False),
    Option("options.chunk-size", "subvolume_size", {**_SIZE, "description": "subvolume interior size (int or [z, y, x])"},
           "subvolume interior size, int or `[z, y, x]`", 512, SIZE, "voxels", "always", example=512),
    Option("options.overlap", "halo",
           {"oneOf": [{"type": "integer", "minimum": 0}, {**_TRIPLE, "items": {"type": "integer", "minimum": 0}}],
            "description": "halo voxels on each side of a subvolume"},
           "halo voxels on each side, int or `[z, y, x]`", 20, SIZE, "voxels", "always", example=20),
    Option("options.iterations", "iterations", {"type": "integer", "minimum": 1},
           "groups of subvolumes processed in turn (checkpoint iterations)", 1),
    Option("options.iteration-size", "iteration_size", {"type": "integer", "minimum": 1},
           "subvolumes per iteration (instead of `options.iterations`)", unit="subvolumes", described_default="none"),
    Option("options.checkpoint-dir", "checkpoint_dir", {"type": ["string", "null"]},
           "folder for per-subvolume checkpoints (enables `--resume`)", kind=FOLDER,
           described_default="none (segmented subvolumes wait in a run folder beside the output, "
           "`.partial-PID-OUTPUT.run`, removed at the end)"),
    Option("options.codec", "codec", {"enum": ["crackle", "lz4", "zlib"]},
           "compression of segmented subvolumes: `crackle` (densest), `lz4` (fastest to write) or `zlib`", "crackle"),
    Option("options.background-value", "background_value", {"type": ["integer", "null"]},
           "grayscale value of empty padding to mask; `null` disables", 0, fingerprint="always"),
    Option("options.background-min-width", "background_min_width", {"type": "integer", "minimum": 1},
           "padding must contain cubes of this width (so dark membranes are never masked)", 5, unit="voxels",
           fingerprint="always"),
    Option("options.roi", "roi_name", {"type": "string", "minLength": 1},
           "a DVID roi (a roi instance's name on the input's node, or its full DVID volume string): only the subvolumes it touches "
           "are segmented, voxels outside it stay 0 ([dvid.md](dvid.md))", kind=ROI, fingerprint="always",
           described_default="none"),
    Option("options.intensity-range", "intensity_range",
           {"oneOf": [{"enum": ["auto", "dtype"]}, {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}],
            "description": "grayscale values that mean black and white: auto (measured, the default), "
            "dtype (the dtype's full range) or [black, white]"},
           "grayscale values meaning black and white: `auto` (measured; see [guarantees.md](guarantees.md)), `dtype` "
           "(the dtype's full range) or `[black, white]`; stages get uint8 for [0, 255], else float32 in [0, 1]",
           "auto", PAIR, fingerprint="unless-default"),
    Option("options.resolution", "resolution",
           {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 3, "maxItems": 3},
           "voxel size `[z, y, x]`, written into the output's metadata for viewers", kind=FLOATS, unit="nm",
           example=[8.0, 8.0, 8.0], described_default="the input's, if it records one"),
    Option("options.write-grayscale", "write_grayscale", {"type": "boolean"},
           "also write the grayscale beside the output as an OME-Zarr image (`OUTPUT-grayscale.zarr`), for viewers", False,
           example=False),
    Option("options.dvid-write", None, {"enum": ["supervoxels", "bodies"]},
           "a DVID labelmap output: `supervoxels` (supervoxels, label indices, mapping, scales) or `bodies` (body ids "
           "in the voxels); see [dvid.md](dvid.md)", described_default="supervoxels"),
    Option("options.context", "context", {"type": "integer", "minimum": 0},
           "voxels read and segmented beyond each subvolume's halo, then cropped away: seeds and agglomeration near "
           "the faces see their neighbourhood, so neighbouring blocks agree (with enough context, exactly the "
           "unblocked segmentation; tested). Costs the larger box's compute", 0, unit="voxels",
           fingerprint="unless-default"),
    Option("options.agglomerate-across-blocks", "agglomerate_across_blocks", {"type": "boolean"},
           "stitch the *supervoxels*, then agglomerate them once over the whole volume's region graph, summed from "
           "every subvolume's statistics, so the agglomeration does not depend on where block boundaries fall (see "
           "[Agglomeration across blocks](#agglomeration-across-blocks))", False, fingerprint="unless-default"),
    Option("options.allow-missing-input", "allow_missing_input", {"type": "boolean"},
           "read zarr input chunks that were never written as the fill value instead of refusing them", False),
    Option("options.retries", "retries", {"type": "integer", "minimum": 0},
           "times a subvolume whose stage raised or whose worker died is tried again (on another worker where the "
           "executor allows) before it is recorded as failed; the run goes on with the others", 2),
    Option("options.allow-missing-blocks", "allow_missing_blocks", {"type": "boolean"},
           "when subvolumes still fail after their retries, write the rest and leave the failed boxes empty (0), "
           "listing them, instead of writing no output; the run still exits 1", False),
    Option("dvid-info", None, _DVID_INFO,
           "the paper's DVID section (`dvid-server`, `uuid`, `segmentation-name`, `grayscale`, `roi`, "
           "`segmentation-type`, `segmentation-block-size`): sets `input`, `output` and `options.roi` ([dvid.md](dvid.md))",
           described_default="none"),
)

def keys_of(rows: tuple[Option, ...]) -> dict[str, str]:
    """config key (a dotted path in the JSON/YAML) -> RunConfig field, of the rows that are fields."""
    return {o.key: o.name for o in rows if o.name}


def fields_of(rows: tuple[Option, ...]) -> dict[str, Option]:
    """RunConfig field -> its row."""
    return {o.name: o for o in rows if o.name}


#: config key (a dotted path in the JSON/YAML) -> RunConfig field
KEYS: dict[str, str] = keys_of(OPTIONS)
FIELDS: dict[str, Option] = fields_of(OPTIONS)


def schema_of(rows: tuple[Option, ...]) -> dict[str, Any]:
    """The JSON schema of a config file, nested from the rows' key paths."""
    root: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
    for row in rows:
        *sections, last = row.key.split(".")
        node = root
        for part in sections:
            node = node["properties"].setdefault(part, {"type": "object", "properties": {}, "additionalProperties": False})
        if sections == ["options", "segmentor"]:
            node.setdefault("description", SEGMENTOR_FILE)
        leaf = copy.deepcopy(row.schema)
        leaf.setdefault("description", row.help)
        node["properties"][last] = leaf
        if row.required_in_section:
            node.setdefault("required", []).append(last)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "labelstitch run configuration",
        **root,
        "anyOf": [{"required": ["input", "output"]}, {"required": ["dvid-info"]}],
    }


#: the JSON schema of a config file
SCHEMA: dict[str, Any] = schema_of(OPTIONS)


def example_of(rows: tuple[Option, ...]) -> dict[str, Any]:
    """The example config of the rows that give an example value."""
    out: dict[str, Any] = {}
    for row in rows:
        if row.example is REQUIRED:
            continue
        *sections, last = row.key.split(".")
        node = out
        for part in sections:
            node = node.setdefault(part, {})
        node[last] = copy.deepcopy(row.example)
    return out


#: ``labelstitch config --example``: the seed paper's Appendix B layout
EXAMPLE: dict[str, Any] = example_of(OPTIONS)


def _described(row: Option) -> str:
    if row.described_default:
        return row.described_default
    value = row.default
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"`{value}`"
    return str(value)


def markdown_table(rows: tuple[Option, ...] = OPTIONS) -> str:
    """The key table of docs/pipeline.md (``labelstitch config --keys``)."""
    lines = ["| key | meaning | unit | default |", "|---|---|---|---|"]
    for row in rows:
        lines.append(f"| `{row.key}` | {row.help} | {row.unit} | {_described(row)} |")
    return "\n".join(lines)
