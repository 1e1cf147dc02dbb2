"""The typed run configuration: one mapping of config keys to Python names, both ways."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labelstitch.pipeline.config import EXAMPLE, KEYS, SCHEMA, ConfigError, RunConfig, load_config


def schema_keys(schema: dict, prefix: str = "") -> set[str]:
    """Every leaf key path of the schema's ``options`` and top level."""
    out = set()
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        if "properties" in sub and key not in ("configuration",):
            out |= schema_keys(sub, path + ".")
        else:
            out.add(path)
    return out


def test_every_config_key_has_one_python_name():
    """Keys the pipeline reads are in KEYS; the rest are turned into them (dvid-info, dvid-write: the
    output's volume string) or ignored (class)."""
    translated = {k for k in schema_keys(SCHEMA) if not k.startswith("dvid-info.")} - {"options.segmentor.class", "options.dvid-write"}
    assert translated == set(KEYS)
    assert len(set(KEYS.values())) == len(KEYS)
    assert set(KEYS.values()) <= {f.name for f in RunConfig.__dataclass_fields__.values()}


def test_the_example_round_trips_and_is_frozen():
    config = RunConfig.load(copy.deepcopy(EXAMPLE))
    assert config.subvolume_size == 512 and config.halo == 20 and config.rule == "medium"
    assert config.stages[1].function == "seeded_watershed" and config.stages[1].parameters["seed_threshold"] == 0.2
    assert RunConfig.from_dict(config.to_dict()) == config
    assert load_config(config.to_dict()) == load_config(copy.deepcopy(EXAMPLE))  # the file form, defaults and all
    with pytest.raises(AttributeError):
        config.rule = "none"  # type: ignore[misc]
    other = config.replace(rule="aggressive", rule_params={"min_one_sided": 100})
    assert other.to_dict()["options"]["stitch-algorithm"] == "aggressive" and config.rule == "medium"
    assert other.settings_hash == config.settings_hash  # the rule does not change the segmented labels
    assert config.replace(halo=8).settings_hash != config.settings_hash


sizes = st.one_of(st.integers(1, 600), st.lists(st.integers(1, 600), min_size=3, max_size=3))


@given(
    chunk=sizes,
    overlap=st.integers(0, 30),
    rule=st.sampled_from(["none", "conservative", "medium", "aggressive"]),
    background=st.one_of(st.none(), st.integers(0, 255)),
    roi=st.one_of(st.none(), st.just([[0, 0, 0], [10, 20, 30]])),
    preserve=st.one_of(st.none(), st.lists(st.integers(1, 2**40), min_size=1, max_size=4)),
    iteration_size=st.one_of(st.none(), st.integers(1, 50)),
)
def test_any_valid_config_round_trips(chunk, overlap, rule, background, roi, preserve, iteration_size):
    raw = {"input": "/a/gray.zarr", "output": "/a/seg.zarr",
           "options": {"chunk-size": chunk, "overlap": overlap, "stitch-algorithm": rule, "background-value": background}}
    if roi is not None:
        raw["roi"] = roi
    if preserve is not None:
        raw["preserve-bodies"] = {"segmentation": "/a/bodies.npy", "bodies": preserve}
    if iteration_size is not None:
        raw["options"]["iteration-size"] = iteration_size
    config = RunConfig.load(raw)
    assert RunConfig.from_dict(config.to_dict()) == config
    assert config.to_dict() == load_config(raw) | {"options": config.to_dict()["options"]}
    assert config.background_value == background and config.preserve_bodies == tuple(preserve or ())


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="options.chunk-size"):
        RunConfig.load({"input": "a.zarr", "output": "b.zarr", "options": {"chunk-size": 0}})
