"""Synthetic neuron-like volumes and imperfect blockwise segmentations of them.

Used by ``labelstitch demo`` and by the tests: real stitching problems, made on the spot,
with a known truth to score against.

* :func:`neurite_labels` packs a volume densely with long, wandering tubes (the Voronoi
  cells of random smooth curves), which is roughly what neuropil looks like.
* :func:`blockwise_segmentation` cuts a label volume into a plan's outer boxes and spoils
  each block the way real per-block segmentation does: boundaries shift by a voxel or two,
  segments get split, an artifact region falsely merges touching neurites, and every block
  uses its own random ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from .geometry import Box, Plan, _triple
from .relabel import remap

__all__ = ["neurite_labels", "em_volume", "mitochondria_mask", "blockwise_segmentation", "consistent_blocks", "random_ids"]


def neurite_labels(
    shape: Sequence[int],
    *,
    n_neurites: int = 60,
    smoothness: float = 12.0,
    seed: int = 0,
) -> NDArray[np.uint32]:
    """A volume densely packed with tube-like bodies, labelled 1..n_neurites.

    Each body is the set of voxels nearest to one random smooth curve; curves run mostly
    along a random main direction and wander sideways, so bodies are long and branch-free
    like neurites, and every voxel belongs to some body.

    Parameters
    ----------
    shape : 3 ints
        Volume shape (Z, Y, X).
    n_neurites : int
        Number of bodies.
    smoothness : float
        Larger values give straighter curves.
    seed : int
        Random seed; the result depends only on the arguments.
    """
    shape_ = _triple(shape, "shape")
    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape_, np.uint32)
    hi = np.array(shape_) - 1
    n_steps = 4 * max(shape_)
    for k in range(1, n_neurites + 1):
        pos = rng.uniform(0, hi)
        main = rng.normal(size=3)
        main /= np.linalg.norm(main)
        direction = main.copy()
        for sign in (1.0, -1.0):
            p, d = pos.copy(), direction * sign
            for _ in range(n_steps):
                d = d + rng.normal(scale=1.0 / smoothness, size=3) + 0.05 * main * sign
                d /= np.linalg.norm(d)
                p = p + d
                if np.any(p < 0) or np.any(p > hi):
                    break
                seeds[tuple(np.round(p).astype(int))] = k
    missing = np.setdiff1d(np.arange(1, n_neurites + 1), np.unique(seeds))
    for k in missing:  # a curve that left the volume at once still gets one voxel
        seeds[tuple(rng.integers(0, np.array(shape_)))] = k
    _, idx = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    return seeds[tuple(idx)]


def em_volume(
    shape: Sequence[int],
    *,
    n_neurites: int = 60,
    noise: float = 12.0,
    artifact: Box | None = None,
    mitochondria: int = 0,
    return_mitochondria: bool = False,
    seed: int = 0,
) -> tuple[NDArray[Any], ...]:
    """An EM-like grayscale volume and its ground truth.

    Bodies from :func:`neurite_labels` get bright, slightly textured cytoplasm; voxels on a
    body boundary are dark membrane. The image is blurred and noisy like FIB-SEM. Inside the
    box ``artifact`` most membrane voxels fade to near cytoplasm brightness, so segmenters
    merge bodies there (the paper's Figure 2b).

    ``mitochondria`` places that many mitochondria inside the neurites (see
    :func:`mitochondria_mask`): a dark double envelope around a grey, grainy matrix, which a
    membrane detector takes for a cell boundary, so supervoxels and agglomerations split
    them off or use them as bridges to a neighbour. They belong to their neurite in the
    ground truth, as in a connectome.

    Returns
    -------
    grayscale : uint8 array
    truth : uint32 array
        Body ids, with 0 on the thin membrane between bodies (like the gala volumes).
    mitochondria : bool array
        Only with ``return_mitochondria``: where the mitochondria are (envelope included).
    """
    shape_ = _triple(shape, "shape")
    rng = np.random.default_rng(seed)
    labels = neurite_labels(shape_, n_neurites=n_neurites, seed=seed)
    membrane = np.zeros(shape_, bool)
    for axis in range(3):
        a = np.moveaxis(labels, axis, 0)
        m = np.moveaxis(membrane, axis, 0)
        change = a[1:] != a[:-1]
        m[1:] |= change
    brightness = rng.uniform(175, 215, size=n_neurites + 1)[labels]
    texture = ndimage.gaussian_filter(rng.normal(0, 10, shape_), 2.0)
    image = np.where(membrane, 45.0, brightness + texture)
    mito = mitochondria_mask(labels, membrane, mitochondria, rng) if mitochondria else np.zeros(shape_, bool)
    if mitochondria:
        envelope = mito & ~ndimage.binary_erosion(mito, border_value=1)
        grain = ndimage.gaussian_filter(rng.normal(0, 18, shape_), 0.8)
        image = np.where(mito, 150.0 + grain, image)
        image[envelope] = 45.0  # a double membrane: as dark as a cell membrane
    if artifact is not None:
        region = artifact.slices()
        fade = image[region]
        fade[membrane[region] & (rng.random(fade.shape) < 0.8)] = 170.0
    image = ndimage.gaussian_filter(image, 0.7) + rng.normal(0, noise, shape_)
    grayscale = np.clip(image, 1, 255).astype(np.uint8)
    truth = np.where(membrane, 0, labels).astype(np.uint32)
    return (grayscale, truth, mito) if return_mitochondria else (grayscale, truth)


def mitochondria_mask(
    labels: NDArray[np.integer], membrane: NDArray[np.bool_], n: int, rng: np.random.Generator,
    *, radius: tuple[float, float] = (1.8, 3.0), length: tuple[float, float] = (4.0, 14.0),
) -> NDArray[np.bool_]:
    """``n`` mitochondria: capsules of random radius and length along a random direction,
    each centred where its neurite is thick enough and clipped to that neurite, at least one
    voxel from its membrane (so every one lies wholly inside one body)."""
    shape = labels.shape
    depth = ndimage.distance_transform_edt(~membrane)  # room to the nearest membrane
    mask = np.zeros(shape, bool)
    grid = np.indices(shape, dtype=np.float32)
    for _ in range(n):
        r = rng.uniform(*radius)
        room = np.flatnonzero((depth.reshape(-1) > r + 1) & ~mask.reshape(-1))
        if room.size == 0:
            break
        centre = np.array(np.unravel_index(int(rng.choice(room)), shape), np.float32)
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        half = rng.uniform(*length) / 2
        lo = np.maximum(np.floor(centre - half - r).astype(int), 0)
        hi = np.minimum(np.ceil(centre + half + r).astype(int) + 1, shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        offset = grid[(slice(None), *box)] - centre[:, None, None, None]
        along = np.clip(np.tensordot(direction, offset, axes=1), -half, half)
        near = np.sum((offset - along * direction[:, None, None, None]) ** 2, axis=0) <= r * r
        inside = near & (labels[box] == labels[tuple(centre.astype(int))]) & (depth[box] > 1)
        mask[box] |= inside
    return mask


def random_ids(labels: NDArray[np.integer], rng: np.random.Generator) -> NDArray[np.uint64]:
    """Give every non-zero label a fresh random uint64 id (0 stays 0)."""
    old = np.unique(labels)
    old = old[old != 0]
    new = rng.choice(np.iinfo(np.int64).max, size=old.size, replace=False).astype(np.uint64) + np.uint64(1)
    return remap(labels, (old, new), dtype=np.uint64)


def consistent_blocks(volume: NDArray[np.integer], plan: Plan, *, seed: int = 0) -> dict[int, NDArray[np.uint64]]:
    """Each subvolume's labels over its outer box, exactly as in ``volume``, in random ids."""
    rng = np.random.default_rng(seed)
    return {sv.id: random_ids(volume[sv.outer.slices()], rng) for sv in plan}


def _jitter_boundaries(labels: NDArray[np.integer], rng: np.random.Generator, prob: float) -> NDArray[np.integer]:
    """Move a random share of boundary voxels to a neighbouring label, along one axis."""
    out = labels.copy()
    for axis in range(3):
        for step in (1, -1):
            shifted = np.roll(labels, step, axis=axis)
            edge = [slice(None)] * 3
            edge[axis] = slice(0, 1) if step == 1 else slice(-1, None)
            shifted[tuple(edge)] = labels[tuple(edge)]
            flip = (shifted != labels) & (rng.random(labels.shape) < prob / 6)
            out[flip] = shifted[flip]
    return out


def _split_segments(labels: NDArray[np.uint64], rng: np.random.Generator, prob: float) -> NDArray[np.uint64]:
    """Cut a random share of segments in two by an axis-aligned plane through their middle."""
    out = labels.copy()
    ids = np.unique(labels)
    ids = ids[ids != 0]
    chosen = ids[rng.random(ids.size) < prob]
    if chosen.size == 0:
        return out
    objects = ndimage.find_objects(np.searchsorted(ids, labels) + 1)
    next_id = int(ids.max()) + 1
    for lab in chosen:
        sl = objects[int(np.searchsorted(ids, lab))]
        if sl is None:
            continue
        axis = int(np.argmax([s.stop - s.start for s in sl]))
        cut = (sl[axis].start + sl[axis].stop) // 2
        region = [slice(None)] * 3
        region[axis] = slice(cut, None)
        view = out[tuple(region)]
        view[view == lab] = next_id
        next_id += 1
    return out


def _merge_touching(labels: NDArray[np.uint64], rng: np.random.Generator, n_pairs: int) -> NDArray[np.uint64]:
    """Join ``n_pairs`` random pairs of touching segments, as a membrane gap would."""
    pairs = set()
    for axis in range(3):
        a = np.moveaxis(labels, axis, 0)
        diff = a[1:] != a[:-1]
        for x, y in zip(a[1:][diff].tolist(), a[:-1][diff].tolist()):
            if x and y:
                pairs.add((min(x, y), max(x, y)))
    if not pairs:
        return labels
    ordered = sorted(pairs)
    take = rng.choice(len(ordered), size=min(n_pairs, len(ordered)), replace=False)
    old = np.array([ordered[i][1] for i in take], np.uint64)
    new = np.array([ordered[i][0] for i in take], np.uint64)
    old, first = np.unique(old, return_index=True)
    return remap(labels, (old, new[first]), dtype=np.uint64)


def blockwise_segmentation(
    truth: NDArray[np.integer],
    plan: Plan,
    *,
    jitter: float = 0.15,
    split_prob: float = 0.03,
    artifact_blocks: Iterable[int] = (),
    merges_per_artifact: int = 6,
    seed: int = 0,
) -> dict[int, NDArray[np.uint64]]:
    """Imperfect per-block segmentations of ``truth``, one per subvolume of ``plan``.

    Parameters
    ----------
    truth : (Z, Y, X) ndarray of int
        The true labels of the whole volume.
    plan : Plan
        Each block covers its subvolume's outer box.
    jitter : float
        Share of boundary voxels that move to a neighbouring segment, per block (so two
        blocks disagree slightly in their overlap, as in the paper's Figure 5a).
    split_prob : float
        Chance that a segment is cut in two inside a block (a false split no stitching rule
        can repair).
    artifact_blocks : ids
        Subvolumes whose segmentation falsely merges touching segments, like an image
        artifact with membrane gaps (Figure 5c).
    merges_per_artifact : int
        Pairs merged in each artifact block.
    seed : int

    Returns
    -------
    dict
        ``{subvolume id: labels over the outer box}``, each block in its own random uint64 ids.
    """
    rng = np.random.default_rng(seed)
    artifacts = set(artifact_blocks)
    blocks = {}
    for sv in plan:
        labels = truth[sv.outer.slices()].astype(np.uint64)
        if jitter > 0:
            labels = _jitter_boundaries(labels, rng, jitter)
        if split_prob > 0:
            labels = _split_segments(labels, rng, split_prob)
        if sv.id in artifacts:
            labels = _merge_touching(labels, rng, merges_per_artifact)
        blocks[sv.id] = random_ids(labels, rng)
    return blocks

