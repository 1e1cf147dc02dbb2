"""Agglomeration across blocks (``options.agglomerate-across-blocks``): the supervoxels are
stitched, then agglomerated once over the region graph summed from every subvolume, so the
result does not depend on where the block boundaries fall, while a stitching rule's
refusals still keep a bad block's merges from spreading."""

from __future__ import annotations

import numpy as np
import pytest

from skimage.measure import label as connected

from labelstitch.pipeline import run
from labelstitch.plugins import PluginError
from labelstitch.stores import open_volume
from labelstitch.synthetic import neurite_labels
from labelstitch.testing import assert_same_partition

STAGES = '''
import numpy as np

def boundary_of_ids(grayscale, mask):
    """Channel 0: a boundary probability that depends only on each voxel and its six
    neighbours (so every block computes the same values inside its interior), high where
    the id changes and different for every id; channel 1: the ids."""
    ids = grayscale.astype(np.int64)
    edge = np.zeros(ids.shape, bool)
    for axis in range(3):
        change = np.diff(ids, axis=axis) != 0
        lo = [slice(None)] * 3; hi = [slice(None)] * 3
        lo[axis] = slice(None, -1); hi[axis] = slice(1, None)
        edge[tuple(lo)] |= change
        edge[tuple(hi)] |= change
    weight = (ids * 0.6180339887) % 1.0
    boundary = np.where(edge, 0.2 + 0.7 * weight, 0.02)
    return np.stack([boundary, ids / 255.0], axis=-1).astype(np.float32)

def ids_as_supervoxels(predictions, mask):
    """The ids; where a block holds an "artifact" (id 255) its ids 1 and 2 and the artifact
    become one supervoxel, as a segmenter merges two neurites where the membrane fades;
    where it holds a "bridge" (id 254) its ids 5 and 13 and the bridge become one, as a
    block that sees where two branches join makes them one supervoxel."""
    ids = np.rint(predictions[..., 1] * 255).astype(np.uint32)
    if (ids == 255).any():
        ids[(ids == 1) | (ids == 2)] = 255
    if (ids == 254).any():
        ids[(ids == 5) | (ids == 13)] = 254
    ids[mask] = 0
    return ids
'''


@pytest.fixture()
def stages(tmp_path, monkeypatch):
    (tmp_path / "acrossstages.py").write_text(STAGES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "acrossstages"


def config(tmp_path, ids, name, *, block, halo, across, rule="medium", threshold=0.45, context=0, mitochondria=None):
    np.save(tmp_path / "ids.npy", ids.astype(np.uint8))
    return {
        "input": str(tmp_path / "ids.npy"),
        "output": str(tmp_path / f"{name}.zarr"),
        "options": {
            "chunk-size": block, "overlap": halo, "stitch-algorithm": rule, "background-value": None,
            "agglomerate-across-blocks": across, "context": context,
            "segmentor": {"configuration": {
                "predict-voxels": {"function": "acrossstages.boundary_of_ids"},
                "create-supervoxels": {"function": "acrossstages.ids_as_supervoxels"},
                "agglomerate-supervoxels": {"function": "rag_agglomeration", "parameters": {
                    "threshold": threshold, **({} if mitochondria is None else {
                        "mitochondria_channel": 1, "mitochondria_threshold": mitochondria})}},
            }},
        },
    }


def oversegmentation(shape=(24, 40, 40), seed=3):
    """Neurites cut into pieces along z and x: supervoxels for the agglomeration to join (ids 1..254)."""
    truth = neurite_labels(shape, n_neurites=10, seed=seed).astype(np.int64)
    z = np.arange(shape[0])[:, None, None] // 6
    x = np.arange(shape[2])[None, None, :] // 13
    pieces = truth * 16 + z * 4 + x + 1
    ids = connected(pieces, background=0, connectivity=1)  # connected: a label in two pieces would be two nodes when blocked
    assert ids.max() < 255
    return ids


def segmented(tmp_path, cfg, **kwargs):
    result = run(cfg, overwrite=True, **kwargs)
    with open_volume(result.output) as store:
        return store.read(), result


@pytest.mark.parametrize(("block", "halo"), [(12, 2), ([10, 16, 14], [1, 3, 2])])
def test_across_blocks_gives_the_unblocked_agglomeration_wherever_the_blocks_fall(stages, tmp_path, block, halo):
    """With supervoxels that agree across blocks, the summed graph is the unblocked graph,
    so the agglomeration is the unblocked one exactly; agglomerating each block on its own
    (the default) is not (so the test can tell)."""
    ids = oversegmentation()
    whole, single = segmented(tmp_path, config(tmp_path, ids, "whole", block=list(ids.shape), halo=0, across=False))
    assert single.counts["bodies"] < ids.max() - 20  # the agglomeration merges plenty
    across, result = segmented(tmp_path, config(tmp_path, ids, "across", block=block, halo=halo, across=True))
    assert_same_partition(across, whole)
    info = result.stitch["agglomeration"]
    assert info["supervoxels"] == ids.max() and info["bodies"] == single.counts["bodies"]
    assert result.counts["stitched supervoxels"] == ids.max() and result.counts["graph edges"] == info["edges"] > 0
    per_block, _ = segmented(tmp_path, config(tmp_path, ids, "per-block", block=block, halo=halo, across=False))
    with pytest.raises(AssertionError):
        assert_same_partition(per_block, whole)


def test_context_aware_agglomeration_across_blocks_is_the_unblocked_one(stages, tmp_path):
    """With channel 1 (the ids / 255) read as mitochondria, supervoxels with ids from 60 on
    are left out of the merging and then join the body they touch most: across blocks as
    unblocked, exactly, and not as the plain agglomeration."""
    ids = oversegmentation()
    assert 0 < (ids >= 60).mean() < 0.5
    whole, _ = segmented(tmp_path, config(tmp_path, ids, "whole", block=list(ids.shape), halo=0, across=False,
                                          mitochondria=59.5 / 255))
    plain, _ = segmented(tmp_path, config(tmp_path, ids, "plain", block=list(ids.shape), halo=0, across=False))
    with pytest.raises(AssertionError):
        assert_same_partition(plain, whole)
    across, _ = segmented(tmp_path, config(tmp_path, ids, "across", block=12, halo=2, across=True, mitochondria=59.5 / 255))
    assert_same_partition(across, whole)


def test_across_blocks_is_the_same_on_every_executor(stages, tmp_path):
    ids = oversegmentation(seed=5)
    cfg = config(tmp_path, ids, "serial", block=12, halo=2, across=True)
    serial, _ = segmented(tmp_path, cfg)
    cfg["output"] = str(tmp_path / "processes.zarr")
    parallel, _ = segmented(tmp_path, cfg, executor="processes", workers=2)
    np.testing.assert_array_equal(parallel, serial)


def test_a_refused_match_keeps_a_bad_blocks_merge_from_spreading(stages, tmp_path):
    """Two neurites (ids 1 and 2) side by side; the block holding an artifact (id 255, far
    from the faces) makes them one supervoxel. Unblocked, that merge is everywhere. Across
    blocks, ``conservative`` and ``medium`` refuse the merged supervoxel's matches and so
    its contacts across the face: the neurites stay apart in the good block. ``aggressive``
    accepts one-sided matches, and the merge spreads, as when stitching bodies."""
    ids = np.ones((8, 8, 32), np.uint8)
    ids[:, 4:, :] = 2
    ids[2:6, 3:5, 2:6] = 255  # the artifact, inside the first block
    whole, _ = segmented(tmp_path, config(tmp_path, ids, "whole", block=list(ids.shape), halo=0, across=False))
    assert whole[0, 0, 28] == whole[0, 7, 28]  # unblocked, the artifact joins the two neurites
    outcome = {}
    for rule in ("conservative", "medium", "aggressive"):
        cfg = config(tmp_path, ids, rule, block=[8, 8, 16], halo=3, across=True, rule=rule)
        cfg["options"]["stitch-parameters"] = {"min_overlap": 5, **({"min_one_sided": 5} if rule == "aggressive" else {})}
        out, _ = segmented(tmp_path, cfg)
        outcome[rule] = bool(out[0, 0, 28] == out[0, 7, 28])
    assert outcome == {"conservative": False, "medium": False, "aggressive": True}


def test_a_branch_whose_join_lies_beyond_the_face_keeps_its_contact(stages, tmp_path):
    """A U-shaped neurite: its two branches (ids 5 and 13, low boundary weights) cross the
    face, and they join (id 254) in the first block only, beyond the second block's halo. The first block makes the
    U one supervoxel; the second sees two branches that do not touch. A rule refuses one of
    them (not mutual, or too small a fraction), but the second block does not separate the
    two where they touch, so the refused branch keeps its contact and the U stays whole,
    as unblocked; a refusal drops contacts only where a side saw two touching pieces."""
    ids = np.full((6, 16, 32), 8, np.uint8)  # 8: the rest, a supervoxel of its own
    ids[1:5, 2:6, 4:] = 5
    ids[1:5, 10:14, 4:] = 13
    ids[1:5, 2:14, 4:8] = 254  # the join, at x 4..8: the second block's outer box starts at x 13
    whole, _ = segmented(tmp_path, config(tmp_path, ids, "whole", block=list(ids.shape), halo=0, across=False))
    assert whole[2, 3, 28] == whole[2, 11, 28]
    for rule in ("conservative", "medium", "aggressive"):
        cfg = config(tmp_path, ids, rule, block=[6, 16, 16], halo=3, across=True, rule=rule)
        cfg["options"]["stitch-parameters"] = {"min_overlap": 5, **({"min_one_sided": 5} if rule == "aggressive" else {})}
        out, _ = segmented(tmp_path, cfg)
        assert out[2, 3, 28] == out[2, 11, 28] == out[2, 8, 5], rule
        assert out[2, 3, 28] != out[0, 0, 28]


def test_an_agglomeration_without_a_graph_form_is_refused_before_any_work(stages, tmp_path):
    ids = oversegmentation()
    cfg = config(tmp_path, ids, "refused", block=12, halo=2, across=True)
    cfg["options"]["segmentor"]["configuration"]["agglomerate-supervoxels"] = {"function": "acrossstages.ids_as_supervoxels"}
    with pytest.raises(PluginError, match="agglomerate-across-blocks needs an agglomerate-supervoxels function"):
        run(cfg)
    assert not (tmp_path / "refused.zarr").exists()
    cfg = config(tmp_path, ids, "no-overlap", block=12, halo=0, across=True)
    with pytest.raises(ValueError, match="needs options.overlap of at least 1 voxel"):
        run(cfg)


def test_compare_and_resume_agglomerate_across_blocks_from_the_checkpoints(stages, tmp_path):
    """The graph travels in the checkpoints: compare scores every rule from them exactly as
    a run with that rule would, and they are bound to the mode they were made in."""
    from labelstitch.pipeline import compare
    from labelstitch.checkpoints import CheckpointError
    from labelstitch.metrics import vi

    ids = oversegmentation(seed=4)
    truth = connected(neurite_labels(ids.shape, n_neurites=10, seed=4) + 1, connectivity=1)
    np.save(tmp_path / "truth.npy", truth.astype(np.uint32))
    cfg = config(tmp_path, ids, "run", block=12, halo=2, across=True, rule="conservative")
    cfg["options"]["checkpoint-dir"] = str(tmp_path / "ckpt")
    out, _ = segmented(tmp_path, cfg)
    rows = {row.name: row for row in compare(cfg, str(tmp_path / "truth.npy"))}
    assert rows["conservative"].total == pytest.approx(vi(out, truth).total, abs=1e-9)
    cfg["output"] = str(tmp_path / "medium.zarr")
    cfg["options"]["stitch-algorithm"] = "medium"
    medium, result = segmented(tmp_path, cfg, resume=True)
    assert result.counts["restored from checkpoints"] == result.counts["subvolumes"]
    assert rows["medium"].total == pytest.approx(vi(medium, truth).total, abs=1e-9)
    cfg["options"]["agglomerate-across-blocks"] = False  # the checkpoints hold supervoxels, not segments
    with pytest.raises(CheckpointError, match="agglomerate-across-blocks"):
        run(cfg, overwrite=True, resume=True)


def test_rule_none_joins_nothing_across_faces(stages, tmp_path):
    """``none`` stitches nothing, across blocks too: every body stays inside one interior."""
    ids = oversegmentation(seed=6)
    out, _ = segmented(tmp_path, config(tmp_path, ids, "none", block=12, halo=2, across=True, rule="none"))
    owner = np.zeros(ids.shape, np.int64)  # which 12^3 interior each voxel lies in
    for axis, n in enumerate(ids.shape):
        owner = owner * 10 + (np.arange(n) // 12).reshape([-1 if a == axis else 1 for a in range(3)])
    pairs = np.unique(np.stack([out.ravel(), owner.ravel()], axis=1), axis=0)
    assert np.unique(pairs[:, 0]).size == pairs.shape[0]  # each body in one interior


def test_explain_says_which_supervoxels_the_agglomeration_joined(stages, tmp_path):
    """``labelstitch explain`` on a body agglomerated across blocks: its segments are
    supervoxels, joined by matches and by the driver's agglomeration."""
    from labelstitch.report import explain_body, format_explanation

    ids = oversegmentation()
    out, result = segmented(tmp_path, config(tmp_path, ids, "across", block=12, halo=2, across=True))
    explained = []
    for body in np.unique(out[out > 0]):
        if np.unique(ids[out == body]).size > 1:  # supervoxels agree across blocks: only the agglomeration joins two
            info = explain_body(result.report.replace(".md", ".npz"), int(body))
            assert info["agglomerated_across_blocks"]
            explained.append(format_explanation(info))
    assert explained and all("supervoxels, joined by" in text for text in explained)
    assert any("joined to the rest by the agglomeration" in text for text in explained)


def test_the_agglomeration_changes_from_the_checkpoints_without_segmenting_again(stages, tmp_path):
    """Across blocks the checkpoints hold supervoxels and graph statistics, not bodies: a new
    agglomeration threshold (or another agglomeration) re-agglomerates them in seconds, and
    gives what a fresh run with it gives."""
    ids = oversegmentation(seed=7)
    cfg = config(tmp_path, ids, "first", block=12, halo=2, across=True, threshold=0.45)
    cfg["options"]["checkpoint-dir"] = str(tmp_path / "ckpt")
    first, _ = segmented(tmp_path, cfg)
    cfg["output"] = str(tmp_path / "again.zarr")
    cfg["options"]["segmentor"]["configuration"]["agglomerate-supervoxels"]["parameters"]["threshold"] = 0.3
    again, result = segmented(tmp_path, cfg, resume=True)
    assert result.counts["restored from checkpoints"] == result.counts["subvolumes"]
    fresh, _ = segmented(tmp_path, config(tmp_path, ids, "fresh", block=12, halo=2, across=True, threshold=0.3))
    assert_same_partition(again, fresh)
    assert np.unique(again).size > np.unique(first).size  # the lower threshold merged less
