"""Run configuration: the seed paper's Appendix B layout, as JSON or YAML, checked by a
schema and turned once into a frozen, typed :class:`RunConfig` that the pipeline passes
everywhere.

The keys, their Python names, types, defaults and help come from one table
(:mod:`labelstitch.pipeline.options`); ``RunConfig``'s fields are made from it. Volume
strings are parsed into :class:`~labelstitch.stores.VolumeRef` here, once, relative to
the config file's folder. Every error names the key (as a path like
``options.chunk-size`` for a file, as the field name like ``subvolume_size`` for a
RunConfig made in Python) and what was expected, and comes before any work starts.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any

from ..checkpoints import settings_hash
from ..plugins import resolve_stage
from ..stores import StoreError, dvid_info_volumes
from .options import EXAMPLE, KEYS, OPTIONS, REQUIRED, SCHEMA, Option, StageConfig, fields_of, keys_of, schema_of

__all__ = ["ConfigError", "EXAMPLE", "KEYS", "RunConfig", "SCHEMA", "StageConfig", "load_config", "make_run_config",
           "validate_config"]


class ConfigError(ValueError):
    """The configuration is missing, unreadable or does not fit the schema."""


def _key_path(error: Any) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "(top level)"


def validate_config(config: dict[str, Any], rows: tuple[Option, ...] = OPTIONS) -> dict[str, Any]:
    """Check ``config`` against :data:`SCHEMA` and fill in defaults; returns a new dict.

    Raises
    ------
    ConfigError
        Naming every offending key and what was expected.
    """
    import jsonschema

    if not isinstance(config, dict):
        raise ConfigError(f"a config must be a JSON/YAML object (mapping), got {type(config).__name__}")
    validator = jsonschema.Draft202012Validator(SCHEMA if rows is OPTIONS else schema_of(rows))
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
    if "dvid-info" in merged:  # the paper's DVID section as volume strings (explicit keys win)
        named = dvid_info_volumes(merged["dvid-info"], options.get("roi"))
        merged.setdefault("input", named["input"])
        merged.setdefault("output", named["output"])
        if named["roi"]:
            options["roi"] = named["roi"]
    for row in rows:
        if row.name is None or row.default is REQUIRED or not row.key.startswith("options."):
            continue
        *sections, last = row.key.split(".")
        node = merged
        for part in sections:
            node = node.setdefault(part, {})
        if row.default is not None:
            node.setdefault(last, copy.deepcopy(_file_default(row)))
    stages = options["segmentor"]["configuration"]
    for stage, default in fields_of(rows)["stages"].default.items():
        stages.setdefault(stage, copy.deepcopy(default))
        stages[stage].setdefault("parameters", {})
    return merged


def _file_default(row: Option) -> Any:
    value = row.default
    return list(value) if isinstance(value, tuple) else value


def _segmentor_file(config: Any, base: Path) -> Any:
    """``config`` with ``options.segmentor`` given as a path (``labelstitch train``'s
    ``segmentor.json``, relative to ``base``) replaced by that file's stages."""
    segmentor = config.get("options", {}).get("segmentor") if isinstance(config, dict) else None
    if not isinstance(segmentor, (str, os.PathLike)):
        return config
    path = Path(base) / os.path.expanduser(os.fspath(segmentor))
    if not path.is_file():
        raise ConfigError(f"options.segmentor: no segmentor file at {path} (`labelstitch train --out DIR` writes "
                          "DIR/segmentor.json); give its path, relative to the config, or the stages themselves")
    try:
        stages = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"options.segmentor: {path} is not JSON: {exc}") from None
    if not isinstance(stages, dict):
        raise ConfigError(f"options.segmentor: {path} holds {type(stages).__name__}, not the stages of a segmentor")
    options = {**config["options"], "segmentor": {"configuration": stages}}
    return {**config, "options": options}


def _read(source: str | os.PathLike[str] | dict[str, Any], rows: tuple[Option, ...] = OPTIONS) -> tuple[dict[str, Any], Path]:
    """A config validated and completed, and the folder its relative paths are relative to."""
    if isinstance(source, dict):
        return validate_config(_segmentor_file(source, Path.cwd()), rows), Path.cwd()
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
    base = path.resolve().parent
    return validate_config(_segmentor_file(data, base), rows), base


def load_config(source: str | os.PathLike[str] | dict[str, Any]) -> dict[str, Any]:
    """Read (from a ``.json``/``.yaml``/``.yml`` file or a dict) and validate a config: the
    file form with every default filled in.

    Relative volume paths in a file are taken relative to the file's folder, in a dict
    relative to the working folder; either way they are made absolute here, so that workers
    (which may run in other folders or on other machines) read the same files.
    """
    return RunConfig.load(source).to_dict()  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- the typed config


def _get(config: dict[str, Any], key: str, missing: Any) -> Any:
    node: Any = config
    for part in key.split("."):
        node = node.get(part, missing) if isinstance(node, dict) else missing
    return node


class _RunConfigMethods:
    """The methods of :class:`RunConfig`, whose fields come from the option table."""

    #: the option table the fields were made from
    options: tuple[Option, ...] = OPTIONS

    @classmethod
    def load(cls, source: Any) -> Any:
        """Read and validate a config file (``.json``, ``.yaml``, ``.yml``) or dict; a
        RunConfig is returned as it is.

        Raises
        ------
        ConfigError
            Naming every offending key and what was expected.
        """
        if isinstance(source, cls):
            return source
        config, base = _read(source, cls.options)
        return cls.from_dict(config, base=base)

    @classmethod
    def from_dict(cls, config: dict[str, Any], *, base: str | os.PathLike[str] | None = None) -> Any:
        """A RunConfig from a dict that :func:`validate_config` has checked and completed
        (relative paths are relative to ``base``, default the working folder)."""
        folder = Path(base) if base is not None else Path.cwd()
        missing = object()
        given = {name: value for key, name in keys_of(cls.options).items() if (value := _get(config, key, missing)) is not missing}
        write = _get(config, "options.dvid-write", None)
        made = cls(**_converted(cls.options, given, folder, by_key=True))
        if write is not None:  # carried by the output's volume string, where the store reads it
            try:
                made = made.replace(output=made.output.with_write_mode(write))
            except StoreError:
                raise ConfigError(f"options.dvid-write is for DVID outputs; the output {made.output} is not a DVID "
                                  "volume: remove it") from None
        return made

    def __post_init__(self) -> None:
        values = _converted(self.options, {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, Path.cwd())  # type: ignore[arg-type]
        for name, value in values.items():
            object.__setattr__(self, name, value)
        _check_fields(self.options, values)

    def to_dict(self) -> dict[str, Any]:
        """The config in its file form (keys of :data:`KEYS`); ``RunConfig.from_dict`` of it
        gives back an equal RunConfig. Unset options are left out."""
        out: dict[str, Any] = {}
        for row in self.options:
            if row.name is None:
                continue
            value = getattr(self, row.name)
            if _unset(value) and _unset(row.default):
                continue  # unset, and unset by default
            node = out
            *parents, last = row.key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = row.kind.to_file(value)
        return out

    def replace(self, **changes: Any) -> Any:
        """A copy with some fields changed (names as in :data:`KEYS`; volume strings are parsed)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def segmentation_settings(self) -> dict[str, Any]:
        """The part of the config that determines the segmented labels, in file form: what
        checkpoints are bound to (:class:`~labelstitch.checkpoints.CheckpointDir`), made of
        the options the table marks as changing the labels. With agglomeration across
        blocks the agglomeration is not part of it (only its boundary channel): it runs on
        the driver, from the checkpoints."""
        part: dict[str, Any] = {}
        for row in self.options:
            if not row.fingerprint or row.name is None:
                continue
            value = getattr(self, row.name)
            if row.fingerprint == "unless-default" and value == row.python_default:
                continue
            node = part
            *parents, last = row.key.split(".")
            for section in parents:
                node = node.setdefault(section, {})
            node[last] = row.kind.to_file(value) if value is not None and value != () else None
        for section, content in list(part.items()):  # a section with nothing set is null (preserve-bodies)
            if isinstance(content, dict) and section != "options" and all(v is None for v in content.values()):
                part[section] = None
        if self.agglomerate_across_blocks:  # type: ignore[attr-defined]
            # the checkpoints hold supervoxels and graph statistics: the agglomeration only
            # chooses which channel is the boundary, so it can change without segmenting again
            stages = part["options"]["segmentor"]["configuration"]
            entry = self.stages[2]  # type: ignore[attr-defined]
            channel = resolve_stage("agglomerate-supervoxels", entry.function, entry.parameters).channel("boundary")
            stages["agglomerate-supervoxels"] = {"graph boundary channel": channel or 0}
        return part

    @property
    def settings_hash(self) -> str:
        """SHA-256 of :meth:`segmentation_settings`: kept in checkpoints and in the output's
        metadata, so that ``--resume`` recognises its own work."""
        return settings_hash(self.segmentation_settings())


def _unset(value: Any) -> bool:
    return value is None or (isinstance(value, tuple) and not value)


def _converted(rows: tuple[Option, ...], values: dict[str, Any], base: Path, *, by_key: bool = False) -> dict[str, Any]:
    """Field values in their Python form, in table order (``options.roi`` needs ``input``);
    a volume string that names no volume is refused (a StoreError) naming its key (``by_key``) or field."""
    out: dict[str, Any] = {}
    for name, row in fields_of(rows).items():
        if name in values:
            try:
                out[name] = row.kind.to_python(values[name], base, out)
            except StoreError as exc:  # a volume string that names no volume: say which key holds it
                raise StoreError(f"{row.key if by_key else name}: {exc}") from None
    return out


@functools.lru_cache(maxsize=None)
def _validator(row: Option) -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(row.schema)


def _check_fields(rows: tuple[Option, ...], values: dict[str, Any]) -> None:
    """Refuse field values outside their schema, naming the field (a RunConfig made in Python)."""
    problems = []
    fields = fields_of(rows)
    for name, value in values.items():
        row = fields[name]
        if _unset(value):
            if row.default is REQUIRED:
                problems.append(f"{name} is required")
            continue
        form = row.kind.to_file(value)
        error = next(iter(_validator(row).iter_errors(form)), None)
        if error is not None:  # a oneOf says nothing useful by itself: say what the row expects
            said = f"expected {row.schema.get('description', row.help)}" if error.validator == "oneOf" else error.message
            problems.append(f"{name}={value!r}: {said}")
    if problems:
        raise ConfigError("invalid RunConfig:\n  " + "\n  ".join(problems))


def _field(row: Option) -> tuple[str, str, Any]:
    if row.default is REQUIRED:
        return (row.name, row.kind.annotation, dataclasses.field())  # type: ignore[return-value]
    if isinstance(row.default, (dict, list)):
        made = functools.partial(copy.deepcopy, row.default)
        return (row.name, row.kind.annotation, dataclasses.field(default_factory=made))  # type: ignore[return-value]
    return (row.name, row.kind.annotation, dataclasses.field(default=row.python_default))  # type: ignore[return-value]


def make_run_config(rows: tuple[Option, ...], name: str = "RunConfig") -> Any:
    """The frozen config class of an option table: one field per row that has a Python
    name (fields without a default first, as a dataclass needs them, then the table's
    order), with the methods of :class:`RunConfig`."""
    ordered = sorted((row for row in rows if row.name), key=lambda row: row.default is not REQUIRED)
    return dataclasses.make_dataclass(
        name, [_field(row) for row in ordered], bases=(_RunConfigMethods,), frozen=True,
        namespace={"__module__": __name__, "options": rows},
    )


RunConfig = make_run_config(OPTIONS)
RunConfig.__doc__ = """A validated run configuration with Python names (see :data:`KEYS`).

Built once, by :meth:`load`, from a JSON/YAML file or a dict, or directly with keyword
arguments (``RunConfig(input="gray.zarr", output="seg.zarr", subvolume_size=256)``: volume
strings are parsed, every value is checked, errors name the field); passed to every step
of the pipeline; change it with :meth:`replace`, never in place. :meth:`to_dict` gives the
config back in its file form. Its fields, their defaults and meaning are the rows of
:data:`labelstitch.pipeline.options.OPTIONS`.
"""
