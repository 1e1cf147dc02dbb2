"""Explaining a stitch: per-face decisions, the largest merged bodies, risky faces, and
the chain of matches behind any body (figures are :mod:`labelstitch.figures`).

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

from .stitching import StitchResult
from .stores import VolumeRef

__all__ = ["explain_body", "format_explanation", "report_paths", "stitch_report", "write_stitch_report"]


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
    if report.get("provenance"):
        lines += ["", "## Provenance", "", "| # | command | started | ended | labelstitch | commit | executor | hosts |",
                  "|---:|---|---|---|---|---|---|---|"]
        for k, e in enumerate(report["provenance"], 1):
            lines.append(f"| {k} | {e['command']} | {e.get('started', '')} | {e.get('ended', '')} | {e.get('labelstitch', '')} "
                         f"| {(e.get('commit') or 'release')[:12]} | {e.get('executor', '')} | {', '.join(e.get('hosts', []))} |")
    return "\n".join(lines) + "\n"


def write_stitch_report(
    result: StitchResult, output: VolumeRef, *, offset: int = 0, folder: str | Path | None = None,
    provenance: list[dict[str, Any]] | None = None,
) -> dict[str, Path] | None:
    """Write the JSON, Markdown and npz report files next to ``output`` (see :func:`report_paths`),
    with the output's ``provenance`` (its history of runs, newest last) when given."""
    paths = report_paths(output, folder)
    if paths is None:
        return None
    report = stitch_report(result, offset=offset)
    if provenance:
        report["provenance"] = provenance
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
