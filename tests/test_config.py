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
    assert config.stages[1].function == "seeded_watershed" and config.stages[1].parameters["seed_threshold"] == 0.3
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


def test_the_doc_table_is_the_option_table():
    from pathlib import Path

    from labelstitch.pipeline.options import markdown_table

    doc = (Path(__file__).parents[1] / "docs" / "pipeline.md").read_text()
    assert markdown_table() in doc, "docs/pipeline.md's key table differs from `labelstitch config --keys`: paste it again"


def test_a_runconfig_made_in_python_names_its_fields_and_parses_its_volumes(tmp_path, monkeypatch):
    from labelstitch.stores import StoreError, VolumeRef

    monkeypatch.chdir(tmp_path)
    config = RunConfig(input="gray.npy", output="out/seg.zarr", subvolume_size=[64, 32, 32])
    assert isinstance(config.input, VolumeRef) and config.input.path == tmp_path / "gray.npy"
    assert config.subvolume_size == (64, 32, 32) and config.rule == "medium" and config.halo == 20
    assert config == RunConfig.load({"input": str(tmp_path / "gray.npy"), "output": "out/seg.zarr",
                                     "options": {"chunk-size": [64, 32, 32]}})
    with pytest.raises(ConfigError, match=r"subvolume_size=0: expected subvolume interior size") as caught:
        RunConfig(input="gray.npy", output="seg.zarr", subvolume_size=0)
    assert "options.chunk-size" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"codec='snappy': 'snappy' is not one of"):
        config.replace(codec="snappy")
    with pytest.raises(StoreError, match=r"output: cannot tell the format of 'seg.png'"):
        RunConfig(input="gray.npy", output="seg.png")


def test_segment_reports_mistakes_in_its_own_argument_names():
    import numpy as np

    import labelstitch as ls

    gray = np.zeros((8, 8, 8), np.uint8)
    with pytest.raises(ConfigError, match=r"invalid arguments of segment\(\):\s+block=0: expected") as caught:
        ls.segment(gray, block=0)
    assert "chunk-size" not in str(caught.value) and "subvolume_size" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"overlap=-1"):
        ls.segment(gray, overlap=-1)


def test_adding_an_option_is_one_row(tmp_path):
    """The recipe of docs/architecture.md, followed once: a row gives the schema, the
    default, the field, the file form, the fingerprint and the docs; nothing else changes."""
    from labelstitch.pipeline.config import make_run_config, validate_config
    from labelstitch.pipeline.options import OPTIONS, Option, keys_of, markdown_table, schema_of

    row = Option("options.smoothing", "smoothing", {"type": "number", "minimum": 0},
                 "Gaussian smoothing of the grayscale before the stages", 0.0, unit="voxels", fingerprint="unless-default")
    rows = (*OPTIONS, row)
    Config = make_run_config(rows)
    assert keys_of(rows)["options.smoothing"] == "smoothing"
    assert schema_of(rows)["properties"]["options"]["properties"]["smoothing"]["minimum"] == 0
    assert "| `options.smoothing` | Gaussian smoothing of the grayscale before the stages | voxels | 0.0 |" in markdown_table(rows)
    plain = Config.load({"input": "/a/g.npy", "output": "/a/s.zarr"})
    smooth = Config.load({"input": "/a/g.npy", "output": "/a/s.zarr", "options": {"smoothing": 1.5}})
    assert plain.smoothing == 0.0 and smooth.smoothing == 1.5
    assert Config.from_dict(validate_config(smooth.to_dict(), rows)) == smooth
    assert plain.settings_hash == RunConfig.load({"input": "/a/g.npy", "output": "/a/s.zarr"}).settings_hash
    assert smooth.settings_hash != plain.settings_hash  # it changes the labels, so the checkpoints' fingerprint
    with pytest.raises(ConfigError, match="options.smoothing: -1 is less than the minimum of 0"):
        Config.load({"input": "/a/g.npy", "output": "/a/s.zarr", "options": {"smoothing": -1}})
    with pytest.raises(ConfigError, match="smoothing=-1: -1 is less than the minimum of 0"):
        Config(input="/a/g.npy", output="/a/s.zarr", smoothing=-1)
