"""Explaining a stitch: per-face decisions, the largest merged bodies, risky faces, and
the chain of matches behind any body. Also the VI heatmap figure (the paper's Figure 9).

A run writes, next to its output ``OUT``:

* ``OUT.stitch.json``: the report as data;
* ``OUT.stitch.md``: the same, readable;
* ``OUT.stitch.npz``: the match table and the body mapping, for ``labelstitch explain``.

An output that is not a file (a DVID instance ``NAME``) gets ``NAME.stitch.*`` in the run's
checkpoint folder instead, when it has one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .metrics import RegionalVI
from .stitching import StitchResult
from .stores import VolumeRef

__all__ = [
    "colour_by_truth", "explain_body", "format_explanation", "report_paths", "stitch_report", "write_heatmaps",
    "write_slices", "write_stitch_report",
]


def report_paths(output: VolumeRef, folder: str | Path | None = None) -> dict[str, Path] | None:
    """Where the report files of an output go: beside a file output, or in ``folder`` for
    an output that is not a file (None if there is no such folder)."""
    base = output.side_file_base(folder)
    if base is None:
        return None
    return {kind: Path(f"{base}.stitch.{kind}") for kind in ("json", "md", "npz")}


def stitch_report(result: StitchResult, *, offset: int = 0, top: int = 10, fan_in: int = 3) -> dict[str, Any]:
    """The report as a JSON-ready dict.

    ``fan_in``: faces where one body joins more than this many segments of one side are
    listed as risky (the paper's Figure 5c: a false merge propagating across a face).
    """
    table = result.matches
    bodies = result.mapping.bodies_of(table.sv_a, table.a)  # 0: a bridge between halo-only labels
    faces_crossed: dict[int, set[int]] = {}
    for body, face in zip(bodies.tolist(), table.face.tolist()):
        if body:
            faces_crossed.setdefault(body, set()).add(face)
    sizes = np.bincount(result.mapping.body.astype(np.int64), minlength=result.n_bodies + 1)
    largest = np.argsort(-sizes[1:])[:top] + 1
    risky = []
    for i, face in enumerate(result.plan.faces()):
        rows = table.face == i
        if not rows.any():
            continue
        body_rows = bodies[rows]
        for side, labels in (("a", table.a[rows]), ("b", table.b[rows])):
            uniq, counts = np.unique(body_rows[body_rows != 0], return_counts=True)
            for body, n in zip(uniq.tolist(), counts.tolist()):
                segs = np.unique(labels[body_rows == body]).size
                if segs > fan_in:
                    risky.append({"face": i, "subvolumes": [face.a, face.b], "side": side, "body": int(body) + offset, "segments": int(segs)})
    return {
        "summary": result.summary(),
        "faces": [
            {"face": i, "subvolumes": [f.a, f.b], "axis": "ZYX"[f.axis], **r.to_dict()}
            for i, (f, r) in enumerate(zip(result.plan.faces(), result.reports))
        ],
        "largest_bodies": [
            {"body": int(b) + offset, "segments": int(sizes[b]), "faces_crossed": len(faces_crossed.get(int(b), ()))}
            for b in largest
            if sizes[b] > 0
        ],
        "risky_faces": sorted(risky, key=lambda r: -r["segments"])[:top],
        "body_offset": offset,
    }


def _markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = [
        "# Stitch report",
        "",
        f"Rule `{s['rule']}` with parameters {s['params'] or 'defaults'}"
        f"{' and connected components' if s['connected_components'] else ''}: {s['subvolumes']} subvolumes, "
        f"{s['faces']} faces, {s['segments']} segments, {s['candidates']} candidate pairs, {s['matches']} matches, "
        f"{s['bodies']} bodies.",
        "",
        "Refused candidates: " + (", ".join(f"{k} {v}" for k, v in s["refused"].items()) or "none") + ".",
        "",
        "## Largest bodies",
        "",
        "| body | segments | faces crossed |",
        "|---:|---:|---:|",
    ]
    lines += [f"| {b['body']} | {b['segments']} | {b['faces_crossed']} |" for b in report["largest_bodies"]]
    lines += ["", "## Faces where one body joins many segments of one side", ""]
    if report["risky_faces"]:
        lines += ["| face | subvolumes | side | body | segments |", "|---:|---|---|---:|---:|"]
        lines += [
            f"| {r['face']} | {r['subvolumes'][0]}, {r['subvolumes'][1]} | {r['side']} | {r['body']} | {r['segments']} |"
            for r in report["risky_faces"]
        ]
    else:
        lines.append("None.")
    lines += ["", "## Faces", "", "| face | subvolumes | axis | considered a/b | candidates | matched | refused |",
              "|---:|---|---|---|---:|---:|---|"]
    for f in report["faces"]:
        refused = ", ".join(f"{k} {v}" for k, v in f["refused"].items()) or "-"
        lines.append(
            f"| {f['face']} | {f['subvolumes'][0]}, {f['subvolumes'][1]} | {f['axis']} | "
            f"{f['considered_a']}/{f['considered_b']} | {f['candidates']} | {f['matched']} | {refused} |"
        )
    return "\n".join(lines) + "\n"


def write_stitch_report(
    result: StitchResult, output: VolumeRef, *, offset: int = 0, folder: str | Path | None = None
) -> dict[str, Path] | None:
    """Write the JSON, Markdown and npz report files next to ``output`` (see :func:`report_paths`)."""
    paths = report_paths(output, folder)
    if paths is None:
        return None
    report = stitch_report(result, offset=offset)
    paths["json"].write_text(json.dumps(report, indent=1) + "\n")
    paths["md"].write_text(_markdown(report))
    t, m = result.matches, result.mapping
    np.savez_compressed(
        paths["npz"],
        face=t.face, sv_a=t.sv_a, a=t.a, sv_b=t.sv_b, b=t.b, count=t.count, size_a=t.size_a, size_b=t.size_b,
        node_sv=m.subvolume, node_label=m.label, node_body=m.body, offset=np.uint64(offset),
        agglomerated=np.bool_(result.agglomeration is not None),
    )
    return paths


def explain_body(npz: str | Path, body: int) -> dict[str, Any]:
    """The segments and matches that built ``body`` (an id of the output volume)."""
    data = np.load(npz)
    offset = int(data["offset"])
    internal = body - offset
    members = data["node_body"] == internal
    if internal < 1 or not members.any():
        raise ValueError(f"body {body} is not a stitched body of this output (preserved bodies are not stitched)")
    nodes = sorted(zip(data["node_sv"][members].tolist(), data["node_label"][members].tolist()))
    node_set = set(nodes)
    matches = []
    for i in range(data["face"].size):
        a = (int(data["sv_a"][i]), int(data["a"][i]))
        if a in node_set:
            matches.append({
                "face": int(data["face"][i]),
                "a": list(a),
                "b": [int(data["sv_b"][i]), int(data["b"][i])],
                "overlap": int(data["count"][i]),
                "size_a": int(data["size_a"][i]),
                "size_b": int(data["size_b"][i]),
            })
    across = bool(data["agglomerated"]) if "agglomerated" in data.files else False
    return {"body": body, "segments": [list(n) for n in nodes], "matches": matches, "agglomerated_across_blocks": across}


def format_explanation(info: dict[str, Any]) -> str:
    across = info.get("agglomerated_across_blocks", False)
    if across:  # the segments are supervoxels; the driver's agglomeration joined them beyond the matches
        lines = [f"body {info['body']}: {len(info['segments'])} supervoxels, joined by {len(info['matches'])} matches "
                 "and by the agglomeration across blocks"]
    else:
        lines = [f"body {info['body']}: {len(info['segments'])} segments joined by {len(info['matches'])} matches"]
    for m in info["matches"]:
        lines.append(
            f"  face {m['face']}: subvolume {m['a'][0]} label {m['a'][1]} <-> subvolume {m['b'][0]} label {m['b'][1]} "
            f"(overlap {m['overlap']} of {m['size_a']} / {m['size_b']} voxels)"
        )
    unmatched = {tuple(s) for s in info["segments"]} - {tuple(m["a"]) for m in info["matches"]} - {tuple(m["b"]) for m in info["matches"]}
    for sv, label in sorted(unmatched):
        if across:
            why = "joined to the rest by the agglomeration" if len(info["segments"]) > 1 else "the body is this supervoxel"
        else:
            why = "the body lies in one subvolume"
        lines.append(f"  subvolume {sv} label {label} (no match: {why})")
    return "\n".join(lines)


def _colour(values: NDArray[np.float64], vmax: float) -> NDArray[np.uint8]:
    v = np.clip(values / max(vmax, 1e-9), 0, 1)
    return np.stack([255 * np.clip(2 * v, 0, 1), 255 * np.clip(2 * v - 1, 0, 1), 40 * (1 - v)], axis=-1).astype(np.uint8)


def write_heatmaps(path: str | Path, rows: list[tuple[str, RegionalVI]], *, part: str = "merge") -> None:
    """The paper's Figure 9: one row per result, one tile per Z layer of regions, coloured by
    ``part`` VI ("merge" or "split") on one shared scale (black 0, red, yellow = the maximum)."""
    import imageio.v3 as iio

    vmax = max(float(getattr(r, part).max()) for _, r in rows)
    grid = getattr(rows[0][1], part).shape
    scale = max(1, 48 // max(grid[1:]))
    picture = []
    for _, regional in rows:
        tiles = []
        for layer in getattr(regional, part):
            tile = np.kron(_colour(layer, vmax), np.ones((scale, scale, 1), np.uint8))
            tiles += [tile, np.full((tile.shape[0], 2, 3), 255, np.uint8)]
        row = np.concatenate(tiles, axis=1)
        picture += [row, np.full((2, row.shape[1], 3), 255, np.uint8)]
    iio.imwrite(path, np.concatenate(picture, axis=0))


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


def write_slices(path: str | Path, grayscale: NDArray[Any], truth: NDArray[Any] | None,
                 panels: list[tuple[str, NDArray[Any]]]) -> None:
    """One Z slice as a row of titled panels: the grayscale, the truth (if given), then each
    segmentation over the grayscale, coloured by :func:`colour_by_truth` (or by id without
    a truth), with a legend below."""
    from PIL import Image, ImageDraw

    gray = grayscale.astype(np.float32)
    span = float(gray.max() - gray.min()) or 1.0
    gray8 = ((gray - gray.min()) / span * 255).astype(np.uint8)
    base = np.repeat(gray8[..., None], 3, axis=-1).astype(np.float32)

    def overlay(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
        mixed = np.where(rgb.any(axis=-1, keepdims=True), 0.45 * base + 0.55 * rgb, base)
        return np.clip(mixed, 0, 255).astype(np.uint8)

    tiles = [("grayscale", base.astype(np.uint8))]
    if truth is not None:
        tiles.append(("ground truth", overlay(_hue(truth.astype(np.uint64)))))
    for title, labels in panels:
        tiles.append((title, overlay(colour_by_truth(labels, truth) if truth is not None else _hue(labels.astype(np.uint64)))))
    height, width = gray8.shape
    gap, header, footer = 6, 30, 34
    canvas = Image.new("RGB", (len(tiles) * (width + gap) - gap, header + height + footer), "white")
    draw = ImageDraw.Draw(canvas)
    for k, (title, tile) in enumerate(tiles):
        x = k * (width + gap)
        canvas.paste(Image.fromarray(tile), (x, header))
        title_lines = [line[: max(8, width // 6)] for line in title.split("\n")[:2]]
        draw.multiline_text((x + 2, 2), "\n".join(title_lines), fill="black", spacing=2)
    legend = ("colours follow the true neurons: one neuron, one colour in every panel; a second colour on a neuron "
              "is a false split, one colour across two neurons a false merge" if truth is not None else "colours: body ids")
    words, lines, line = legend.split(), [], ""
    for word in words:
        if len(line) + len(word) + 1 > max(40, canvas.width // 6):
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    for k, text in enumerate(lines[:2]):
        draw.text((2, header + height + 4 + 14 * k), text, fill="black")
    canvas.save(path)
