"""Run configuration: the seed paper's Appendix B layout, as JSON or YAML, checked by a
schema and turned once into a frozen, typed :class:`RunConfig` that the pipeline passes
everywhere.

Every error names the key (as a path like ``options.chunk-size``) and what was expected,
and comes before any work starts. :data:`KEYS` is the one place where config keys meet
Python names.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoints import settings_hash

__all__ = ["ConfigError", "EXAMPLE", "KEYS", "RunConfig", "SCHEMA", "StageConfig", "load_config", "validate_config"]


class ConfigError(ValueError):
    """The configuration is missing, unreadable or does not fit the schema."""


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

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "labelstitch run configuration",
    "type": "object",
    "properties": {
        "input": {"type": "string", "description": "grayscale volume (path.zarr, path.npy, path.h5:dataset, path.tif)"},
        "output": {"type": "string", "description": "where the stitched segmentation is written (zarr by default)"},
        "roi": {
            "type": "array",
            "items": _TRIPLE,
            "minItems": 2,
            "maxItems": 2,
            "description": "[[z0, y0, x0], [z1, y1, x1]]: segment only this box",
        },
        "ground-truth": {"type": "string", "description": "a label volume to score the result against"},
        "dvid-info": {
            "type": "object",
            "description": "the seed paper's DVID section: input, output and ROI on one DVID node",
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
        },
        "preserve-bodies": {
            "type": "object",
            "properties": {
                "segmentation": {"type": "string", "description": "an existing label volume"},
                "bodies": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1},
            },
            "required": ["segmentation", "bodies"],
            "additionalProperties": False,
        },
        "options": {
            "type": "object",
            "properties": {
                "segmentor": {
                    "type": "object",
                    "properties": {
                        "class": {"type": "string", "description": "accepted for DVIDSparkServices configs; ignored"},
                        "configuration": {
                            "type": "object",
                            "properties": {
                                "predict-voxels": _STAGE,
                                "create-supervoxels": _STAGE,
                                "agglomerate-supervoxels": _STAGE,
                            },
                            "additionalProperties": False,
                        },
                    },
                    "additionalProperties": False,
                },
                "stitch-algorithm": {"type": "string", "description": "none, conservative, medium, aggressive or a plugin rule"},
                "stitch-parameters": {"type": "object", "description": "thresholds of the stitching rule"},
                "stitch-connected-components": {"type": "boolean"},
                "chunk-size": {**_SIZE, "description": "subvolume interior size (int or [z, y, x])"},
                "overlap": {
                    "oneOf": [{"type": "integer", "minimum": 0}, {**_TRIPLE, "items": {"type": "integer", "minimum": 0}}],
                    "description": "halo voxels on each side of a subvolume",
                },
                "iterations": {"type": "integer", "minimum": 1, "description": "number of checkpoint iterations"},
                "iteration-size": {"type": "integer", "minimum": 1, "description": "subvolumes per iteration"},
                "checkpoint-dir": {"type": ["string", "null"], "description": "folder for per-subvolume checkpoints"},
                "codec": {"enum": ["crackle", "lz4", "zlib"], "description": "compression of segmented subvolumes (checkpoints, run folder)"},
                "background-value": {
                    "type": ["integer", "null"],
                    "description": "grayscale value of empty padding to mask (null: no masking)",
                },
                "background-min-width": {"type": "integer", "minimum": 1},
                "intensity-range": {
                    "oneOf": [
                        {"enum": ["auto", "dtype"]},
                        {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
                    ],
                    "description": "grayscale values that mean black and white: auto (measured, the default), "
                    "dtype (the dtype's full range) or [black, white]",
                },
                "resolution": {
                    "type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 3, "maxItems": 3,
                    "description": "voxel size in nanometres [z, y, x] (default: the input's, if it records one)",
                },
                "write-grayscale": {
                    "type": "boolean",
                    "description": "also write the grayscale beside the output as an OME-Zarr image (OUTPUT-grayscale.zarr)",
                },
                "dvid-write": {
                    "enum": ["supervoxels", "bodies"],
                    "description": "a DVID labelmap output: supervoxels + mapping + label indices (the default), or "
                    "body ids in the voxels (labelblk and labelarray outputs take bodies only)",
                },
                "context": {
                    "type": "integer", "minimum": 0,
                    "description": "voxels read and segmented beyond each subvolume's halo, then cropped away, so that "
                    "seeds and agglomeration near its faces see their neighbourhood (default 0)",
                },
                "agglomerate-across-blocks": {
                    "type": "boolean",
                    "description": "stitch the supervoxels, then agglomerate them once over the whole volume's region graph "
                    "(summed from every subvolume's statistics), so the agglomeration does not depend on the blocking",
                },
                "allow-missing-input": {
                    "type": "boolean",
                    "description": "read missing chunks of a zarr input as its fill value instead of refusing them",
                },
                "roi": {
                    "type": "string",
                    "minLength": 1,
                    "description": "a DVID roi (a name on the input's node, or dvid://HOST:PORT/UUID/NAME)",
                },
            },
            "additionalProperties": False,
        },
    },
    "anyOf": [{"required": ["input", "output"]}, {"required": ["dvid-info"]}],
    "additionalProperties": False,
}

DEFAULT_OPTIONS: dict[str, Any] = {
    "segmentor": {
        "configuration": {
            "predict-voxels": {"function": "naive_membrane_predictions", "parameters": {}},
            "create-supervoxels": {"function": "seeded_watershed", "parameters": {}},
            "agglomerate-supervoxels": {"function": "rag_agglomeration", "parameters": {}},
        }
    },
    "stitch-algorithm": "medium",
    "stitch-parameters": {},
    "stitch-connected-components": False,
    "chunk-size": 512,
    "overlap": 20,
    "iterations": 1,
    "checkpoint-dir": None,
    "codec": "crackle",
    "background-value": 0,
    "background-min-width": 5,
    "intensity-range": "auto",
    "allow-missing-input": False,
    "context": 0,
    "agglomerate-across-blocks": False,
    "write-grayscale": False,
}

EXAMPLE: dict[str, Any] = {
    "input": "grayscale.zarr",
    "output": "segmentation.zarr",
    "ground-truth": "groundtruth.npy",
    "options": {
        "segmentor": {
            "configuration": {
                "predict-voxels": {"function": "naive_membrane_predictions", "parameters": {}},
                "create-supervoxels": {
                    "function": "seeded_watershed",
                    "parameters": {"boundary_channel": 0, "seed_threshold": 0.2, "seed_size": 5, "min_segment_size": 50},
                },
                "agglomerate-supervoxels": {"function": "rag_agglomeration", "parameters": {"threshold": 0.2}},
            }
        },
        "stitch-algorithm": "medium",
        "chunk-size": 512,
        "overlap": 20,
    },
}


def _key_path(error: Any) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "(top level)"


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Check ``config`` against :data:`SCHEMA` and fill in defaults; returns a new dict.

    Raises
    ------
    ConfigError
        Naming every offending key and what was expected.
    """
    import jsonschema

    if not isinstance(config, dict):
        raise ConfigError(f"a config must be a JSON/YAML object (mapping), got {type(config).__name__}")
    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors:
            if e.validator == "additionalProperties":
                allowed = ", ".join(sorted(e.schema.get("properties", {})))
                lines.append(f"{_key_path(e)}: {e.message}; allowed keys: {allowed}")
            elif e.validator == "required":
                lines.append(f"{_key_path(e)}: {e.message}")
            elif e.validator == "anyOf" and not e.absolute_path:
                missing = [k for k in ("input", "output") if k not in config]
                lines.append(
                    f"(top level): {' and '.join(repr(k) for k in missing)} "
                    f"{'is a required property' if len(missing) == 1 else 'are required properties'} "
                    "(or give a 'dvid-info' section)"
                )
            elif e.validator == "oneOf":
                lines.append(f"{_key_path(e)}: expected {e.schema.get('description', 'a valid value')}, got {e.instance!r}")
            else:
                lines.append(f"{_key_path(e)}: {e.message}")
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
    merged = copy.deepcopy(config)
    options = merged.setdefault("options", {})
    if "dvid-info" in merged:
        _apply_dvid_info(merged)
    write = options.pop("dvid-write", None)
    if write is not None:  # carried by the output's volume string, where the store reads it
        output = str(merged.get("output", ""))
        if not output.startswith("dvid://"):
            raise ConfigError(f"options.dvid-write is for DVID outputs; the output {output} is not a dvid:// volume: remove it")
        if "write=" not in output:
            merged["output"] = output + ("&" if "?" in output else "?") + f"write={write}"
    for key, value in DEFAULT_OPTIONS.items():
        if key == "segmentor":
            stages = options.setdefault("segmentor", {}).setdefault("configuration", {})
            for stage, default in value["configuration"].items():
                stages.setdefault(stage, copy.deepcopy(default))
                stages[stage].setdefault("parameters", {})
        else:
            options.setdefault(key, copy.deepcopy(value))
    return merged


def _apply_dvid_info(config: dict[str, Any]) -> None:
    """Turn the paper's ``dvid-info`` section into volume strings (explicit keys win)."""
    info = config["dvid-info"]
    server = info["dvid-server"].removeprefix("http://").rstrip("/")
    node = f"dvid://{server}/{info['uuid']}"
    config.setdefault("input", f"{node}/{info['grayscale']}")
    roi = config["options"].get("roi") or info.get("roi")
    if roi and "://" not in roi:
        config["options"]["roi"] = f"{node}/{roi}"
    query = {
        "roi": roi if roi and "://" not in roi else None,  # writes skip the blocks outside the ROI
        "type": info.get("segmentation-type"),
        "blocksize": info.get("segmentation-block-size"),
    }
    tail = "&".join(f"{k}={v}" for k, v in query.items() if v is not None)
    config.setdefault("output", f"{node}/{info['segmentation-name']}" + (f"?{tail}" if tail else ""))


def load_config(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """Read (from a ``.json``/``.yaml``/``.yml`` file or a dict) and validate a config.

    Relative volume paths in a file are taken relative to the file's folder, in a dict
    relative to the working folder; either way they are made absolute here, so that workers
    (which may run in other folders or on other machines) read the same files.
    """
    if isinstance(source, dict):
        return _absolute_paths(validate_config(source), Path.cwd())
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"no config file at {path}")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        raise ConfigError(f"cannot parse {path}: {exc}") from None
    return _absolute_paths(validate_config(data), path.resolve().parent)


def _absolute_paths(config: dict[str, Any], base: Path) -> dict[str, Any]:
    for key in ("input", "output", "ground-truth"):
        if key in config:
            config[key] = _relative_to(config[key], base)
    if config["options"].get("checkpoint-dir"):
        config["options"]["checkpoint-dir"] = _relative_to(config["options"]["checkpoint-dir"], base)
    if "preserve-bodies" in config:
        config["preserve-bodies"]["segmentation"] = _relative_to(config["preserve-bodies"]["segmentation"], base)
    return config


def _relative_to(uri: str, base: Path) -> str:
    if "://" in uri or Path(uri.split(":")[0] if ".h5:" in uri else uri).is_absolute():
        return uri
    return str(base / uri)


# ----------------------------------------------------------------------------- the typed config

#: config key (a dotted path in the JSON/YAML) -> :class:`RunConfig` field
KEYS: dict[str, str] = {
    "input": "input",
    "output": "output",
    "ground-truth": "ground_truth",
    "roi": "roi_box",
    "preserve-bodies.segmentation": "preserve_volume",
    "preserve-bodies.bodies": "preserve_bodies",
    "options.segmentor.configuration": "stages",
    "options.stitch-algorithm": "rule",
    "options.stitch-parameters": "rule_params",
    "options.stitch-connected-components": "connected_components",
    "options.chunk-size": "subvolume_size",
    "options.overlap": "halo",
    "options.iterations": "iterations",
    "options.iteration-size": "iteration_size",
    "options.checkpoint-dir": "checkpoint_dir",
    "options.codec": "codec",
    "options.background-value": "background_value",
    "options.background-min-width": "background_min_width",
    "options.roi": "roi_name",
    "options.intensity-range": "intensity_range",
    "options.allow-missing-input": "allow_missing_input",
    "options.context": "context",
    "options.agglomerate-across-blocks": "agglomerate_across_blocks",
    "options.resolution": "resolution",
    "options.write-grayscale": "write_grayscale",
}

#: fields whose key is left out of the file form when they are unset
_OPTIONAL = ("ground_truth", "roi_box", "roi_name", "preserve_volume", "preserve_bodies", "iteration_size", "resolution")

_STAGE_ORDER = ("predict-voxels", "create-supervoxels", "agglomerate-supervoxels")


@dataclass(frozen=True)
class StageConfig:
    """One segmentation stage as configured: a registered name or dotted path, and its parameters."""

    function: str
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)


Size = int | tuple[int, int, int]


@dataclass(frozen=True)
class RunConfig:
    """A validated run configuration with Python names (see :data:`KEYS`).

    Built once, by :meth:`load`, from a JSON/YAML file or a dict, and passed to every step of
    the pipeline; change it with :meth:`replace`, never in place. :meth:`to_dict` gives the
    config back in its file form.
    """

    input: str
    output: str
    stages: tuple[StageConfig, StageConfig, StageConfig]
    rule: str
    rule_params: dict[str, Any]
    connected_components: bool
    subvolume_size: Size
    halo: Size
    iterations: int
    codec: str
    background_value: int | None
    background_min_width: int
    intensity_range: str | tuple[float, float] = "auto"
    allow_missing_input: bool = False
    context: int = 0
    agglomerate_across_blocks: bool = False
    resolution: tuple[float, float, float] | None = None
    write_grayscale: bool = False
    ground_truth: str | None = None
    roi_box: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None
    roi_name: str | None = None
    preserve_volume: str | None = None
    preserve_bodies: tuple[int, ...] = ()
    iteration_size: int | None = None
    checkpoint_dir: str | None = None

    @classmethod
    def load(cls, source: RunConfig | str | os.PathLike[str] | dict[str, Any]) -> RunConfig:
        """Read and validate a config file (``.json``, ``.yaml``, ``.yml``) or dict; a
        RunConfig is returned as it is.

        Raises
        ------
        ConfigError
            Naming every offending key and what was expected.
        """
        if isinstance(source, RunConfig):
            return source
        return cls.from_dict(load_config(source))

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> RunConfig:
        """A RunConfig from a dict that :func:`validate_config` has checked and completed."""
        values: dict[str, Any] = {}
        missing = object()
        for key, name in KEYS.items():
            node: Any = config
            for part in key.split("."):
                node = node.get(part, missing) if isinstance(node, dict) else missing
            if node is not missing:
                values[name] = node
        stages = values.pop("stages")
        values["stages"] = tuple(
            StageConfig(stages[s]["function"], dict(stages[s].get("parameters", {}))) for s in _STAGE_ORDER
        )
        for name in ("subvolume_size", "halo"):
            if isinstance(values[name], list):
                values[name] = tuple(values[name])
        if "roi_box" in values:
            values["roi_box"] = tuple(tuple(int(v) for v in corner) for corner in values["roi_box"])
        if "preserve_bodies" in values:
            values["preserve_bodies"] = tuple(int(b) for b in values["preserve_bodies"])
        values["rule_params"] = dict(values["rule_params"])
        if isinstance(values.get("resolution"), list):
            values["resolution"] = tuple(float(v) for v in values["resolution"])
        if isinstance(values.get("intensity_range"), list):
            values["intensity_range"] = tuple(values["intensity_range"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The config in its file form (keys of :data:`KEYS`); ``RunConfig.from_dict``
        of it gives back an equal RunConfig."""
        out: dict[str, Any] = {}
        for key, name in KEYS.items():
            value = getattr(self, name)
            if name in _OPTIONAL and not value:
                continue
            if name == "stages":
                value = {s: {"function": c.function, "parameters": dict(c.parameters)} for s, c in zip(_STAGE_ORDER, value)}
            elif isinstance(value, tuple):
                value = json.loads(json.dumps(value))  # tuples (nested too) as lists
            elif isinstance(value, dict):
                value = copy.deepcopy(value)
            node = out
            *parents, last = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
        return out

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with some fields changed (names as in :data:`KEYS`)."""
        return dataclasses.replace(self, **changes)

    def segmentation_settings(self) -> dict[str, Any]:
        """The part of the config that determines the segmented labels, in file form: what
        checkpoints are bound to (:class:`~labelstitch.checkpoints.CheckpointDir`). With
        agglomeration across blocks the agglomeration is not part of it (only its boundary
        channel): it runs on the driver, from the checkpoints."""
        whole = self.to_dict()
        options = whole.get("options", {})
        top = {"input": "input", "roi": "roi_box", "preserve-bodies": None}
        part: dict[str, Any] = {k: whole.get(k) for k in top}
        stages = dict(options["segmentor"]["configuration"])
        if options.get("agglomerate-across-blocks"):
            # the checkpoints hold supervoxels and graph statistics: the agglomeration only
            # chooses which channel is the boundary, so it can change without segmenting again
            params = stages["agglomerate-supervoxels"].get("parameters", {})
            stages["agglomerate-supervoxels"] = {"graph boundary channel": int(params.get("boundary_channel", 0))}
        part["options"] = {
            "segmentor": {"configuration": stages},
            **{k: options.get(k) for k in ("chunk-size", "overlap", "background-value", "background-min-width", "roi")},
            **({"intensity-range": options["intensity-range"]} if options.get("intensity-range", "auto") != "auto" else {}),
            **({"context": options["context"]} if options.get("context") else {}),
            **({"agglomerate-across-blocks": True} if options.get("agglomerate-across-blocks") else {}),
        }
        return part

    @property
    def settings_hash(self) -> str:
        """SHA-256 of :meth:`segmentation_settings`: kept in checkpoints and in the output's
        metadata, so that ``--resume`` recognises its own work."""
        return settings_hash(self.segmentation_settings())
