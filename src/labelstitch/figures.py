"""Figures a scientist can put in a report (matplotlib, 150 dpi and more).

* :func:`write_heatmaps`: the paper's Figure 9, VI per region: one row per result (its
  name on the left), one panel per Z layer of regions, on one colour scale with a colour bar
  in bits, axes in voxels (or µm with a voxel size).
* :func:`write_slices`: one Z slice of the grayscale, the truth and every result over it,
  each panel titled (name, false merge and split in bits), the same colour for the same
  true neuron in every panel (:func:`colour_by_truth`), a scale bar, a legend.

Each PNG also carries its title and description in its metadata (``Title``,
``Description``), so a reader (and the tests) can tell what it shows without looking.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .metrics import RegionalVI

__all__ = ["DPI", "colour_by_truth", "heatmap_figure", "slices_figure", "write_heatmaps", "write_slices"]

#: resolution of every figure written (print quality)
DPI = 150


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def _length(voxels: float, resolution: tuple[float, ...] | None) -> tuple[float, str]:
    """A length in voxels as (value, unit): µm with a voxel size (nm), else voxels."""
    if resolution is None:
        return voxels, "voxels"
    return voxels * float(resolution[-1]) / 1000.0, "µm"


def heatmap_figure(rows: list[tuple[str, RegionalVI]], *, part: str = "merge",
                   resolution: tuple[float, float, float] | None = None) -> Any:
    """The figure of :func:`write_heatmaps` (a matplotlib ``Figure``)."""
    plt = _pyplot()
    if part not in ("merge", "split", "total"):
        raise ValueError(f"`part` must be merge, split or total, got {part!r}")
    values = [np.asarray(getattr(regional, part)) for _, regional in rows]
    vmax = max(float(v.max()) for v in values) or 1.0
    block, boxes = rows[0][1].block, rows[0][1].boxes
    layers = values[0].shape[0]
    width, unit = _length(max(b.stop[2] for b in boxes), resolution)  # the volume's extent, not whole regions
    height, _ = _length(max(b.stop[1] for b in boxes), resolution)
    depth = max(b.stop[0] for b in boxes)
    grid_width, _ = _length(values[0].shape[2] * block[2], resolution)  # whole regions, the last cut at the edge
    grid_height, _ = _length(values[0].shape[1] * block[1], resolution)
    figure, axes = plt.subplots(len(rows), layers, squeeze=False, dpi=DPI,
                                figsize=(1.2 + 2.2 * layers, 0.9 + 2.0 * len(rows) * height / max(width, 1e-9)))
    image = None
    for r, ((name, _), grid) in enumerate(zip(rows, values)):
        for z in range(layers):
            ax = axes[r][z]
            image = ax.imshow(grid[z], cmap="inferno", vmin=0.0, vmax=vmax, extent=(0, grid_width, grid_height, 0),
                              interpolation="nearest")
            ax.set_xlim(0, width)
            ax.set_ylim(height, 0)
            if r == 0:
                ax.set_title(f"z {z * block[0]}-{min((z + 1) * block[0], depth)} voxels", fontsize=8)
            if z == 0:
                ax.set_ylabel(f"{name}\ny ({unit})", fontsize=8)
            else:
                ax.set_yticklabels([])
            if r == len(rows) - 1:
                ax.set_xlabel(f"x ({unit})", fontsize=8)
            else:
                ax.set_xticklabels([])
            ax.tick_params(labelsize=7)
    bar = figure.colorbar(image, ax=axes.ravel().tolist(), shrink=0.9)
    what = {"merge": "false merge", "split": "false split", "total": "total"}[part]
    bar.set_label(f"{what} VI per region (bits)", fontsize=8)
    title = f"{what.capitalize()} VI per {block[0]}x{block[1]}x{block[2]}-voxel region"
    figure.suptitle(title, fontsize=10)
    figure._labelstitch_title = title  # type: ignore[attr-defined]
    return figure


def write_heatmaps(path: str | Path, rows: list[tuple[str, RegionalVI]], *, part: str = "merge",
                   resolution: tuple[float, float, float] | None = None) -> None:
    """The paper's Figure 9: one row per ``(name, RegionalVI)``, one panel per Z layer of
    regions, coloured by ``part`` VI ("merge", "split" or "total") on one scale with a
    colour bar in bits."""
    figure = heatmap_figure(rows, part=part, resolution=resolution)
    _save(figure, path, figure._labelstitch_title, f"rows: {', '.join(name for name, _ in rows)}")


# ----------------------------------------------------------------------------- slice pictures


def _hue(ids: NDArray[np.uint64]) -> NDArray[np.uint8]:
    """A bright colour per id, stable across pictures (0 is black)."""
    h = ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    rgb = np.stack([(h >> np.uint64(s)) & np.uint64(0xFF) for s in (16, 32, 48)], axis=-1).astype(np.int32)
    rgb = (rgb * 3 // 4 + 64).astype(np.uint8)  # never too dark to see over the EM
    rgb[ids == 0] = 0
    return rgb


def colour_by_truth(labels: NDArray[Any], truth: NDArray[Any]) -> NDArray[np.uint8]:
    """RGB colours of a segmentation slice that mean the same neuron in every picture: the
    largest segment over each true neuron takes that neuron's colour; any other segment over
    it (a false split) takes a colour of its own; a segment spread over two neurons (a false
    merge) shows one colour across both."""
    flat, gt = labels.ravel().astype(np.uint64), truth.ravel().astype(np.uint64)
    keys, counts = np.unique(np.stack([flat, gt]), axis=1, return_counts=True)
    colour_of: dict[int, int] = {}
    best: dict[int, tuple[int, int]] = {}  # segment -> (voxels, truth) of its majority neuron
    for (seg, body), n in zip(keys.T.tolist(), counts.tolist()):
        if seg and body and n > best.get(seg, (0, 0))[0]:
            best[seg] = (n, body)
    claimed: dict[int, tuple[int, int]] = {}  # truth -> (voxels, segment) of its largest segment
    for seg, (n, body) in best.items():
        if n > claimed.get(body, (0, 0))[0]:
            claimed[body] = (n, seg)
    for body, (_, seg) in claimed.items():
        colour_of[seg] = body
    uniq, inverse = np.unique(flat, return_inverse=True)
    mapped = np.array([colour_of.get(int(s), (int(s) * 2654435761 + 12345) % 2**63 + 2**40) if s else 0 for s in uniq], np.uint64)
    return _hue(mapped[inverse].reshape(labels.shape))


def slices_figure(grayscale: NDArray[Any], truth: NDArray[Any] | None, panels: list[tuple[str, NDArray[Any]]], *,
                  z: int | None = None, resolution: tuple[float, float, float] | None = None) -> Any:
    """The figure of :func:`write_slices` (a matplotlib ``Figure``)."""
    plt = _pyplot()
    gray = grayscale.astype(np.float32)
    span = float(gray.max() - gray.min()) or 1.0
    base = np.repeat(((gray - gray.min()) / span)[..., None], 3, axis=-1)

    def overlay(rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
        return np.where(rgb.any(axis=-1, keepdims=True), 0.45 * base + 0.55 * rgb / 255.0, base)

    tiles = [("grayscale", base)]
    if truth is not None:
        tiles.append(("ground truth", overlay(_hue(truth.astype(np.uint64)))))
    for title, labels in panels:
        tiles.append((title, overlay(colour_by_truth(labels, truth) if truth is not None else _hue(labels.astype(np.uint64)))))
    height, width = gray.shape
    columns = min(len(tiles), 4)
    lines = -(-len(tiles) // columns)
    figure, axes = plt.subplots(lines, columns, squeeze=False, dpi=DPI,
                                figsize=(0.4 + 3.0 * columns, 0.9 + 3.0 * lines * height / max(width, 1)))
    for ax in axes.ravel():
        ax.set_axis_off()
    bar, unit = _length(1.0, resolution)
    voxels = _round_length(width / 4, bar)
    for ax, (title, tile) in zip(axes.ravel(), tiles):
        ax.imshow(tile, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.plot([width * 0.05, width * 0.05 + voxels], [height * 0.93] * 2, color="white", linewidth=2.5)
        ax.text(width * 0.05, height * 0.90, f"{voxels * bar:g} {unit}", color="white", fontsize=7)
    where = f"z = {z} (voxels)" if z is not None else "one Z slice"
    title = f"Segmentations at {where}"
    figure.suptitle(title, fontsize=10)
    legend = ("Colours follow the true neurons: one neuron, one colour in every panel; a second colour on a neuron is a "
              "false split, one colour across two neurons a false merge. VI in bits." if truth is not None
              else "Colours: body ids.")
    figure.text(0.01, 0.005, legend, fontsize=7, wrap=True)
    figure._labelstitch_title = title  # type: ignore[attr-defined]
    figure._labelstitch_legend = legend  # type: ignore[attr-defined]
    return figure


def _round_length(voxels: float, per_voxel: float) -> float:
    """A scale bar of about ``voxels``, whose length in units (``per_voxel`` a voxel) is round."""
    length = voxels * per_voxel
    nice = 10 ** np.floor(np.log10(max(length, 1e-9)))
    for step in (5, 2, 1):
        if step * nice <= length:
            return float(step * nice / per_voxel)
    return float(nice / per_voxel)


def write_slices(path: str | Path, grayscale: NDArray[Any], truth: NDArray[Any] | None,
                 panels: list[tuple[str, NDArray[Any]]], *, z: int | None = None,
                 resolution: tuple[float, float, float] | None = None) -> None:
    """One Z slice as titled panels: the grayscale, the truth (if given), then each
    segmentation over the grayscale, coloured by :func:`colour_by_truth` (or by id without a
    truth), with a scale bar (µm with a voxel size in nm, else voxels) and a legend."""
    figure = slices_figure(grayscale, truth, panels, z=z, resolution=resolution)
    _save(figure, path, figure._labelstitch_title,
          f"panels: {', '.join(t.splitlines()[0] for t, _ in panels)}; {figure._labelstitch_legend}")


def _save(figure: Any, path: str | Path, title: str, description: str) -> None:
    plt = _pyplot()
    try:
        figure.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Title": title, "Description": description})
    finally:
        plt.close(figure)
