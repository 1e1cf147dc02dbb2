"""``tarsupervoxels`` instances: one file per supervoxel (FlyEM keeps supervoxel meshes there),
and a body's files as one tar, through the labelmap the instance is synced to.

From DVID's own help text (``datatype/tarsupervoxels/tarsupervoxels.go``), not from
``dvid-api.md``: the instance needs an ``Extension`` setting; ``POST``/``GET``/``DELETE
supervoxel/ID``; ``POST load`` takes a tar whose files are named ``ID.EXT``; ``GET
tarfile/BODY`` returns the body's supervoxels' files (``ID.EXT``, or an empty ``ID.missing``
for a supervoxel with none; 400 for a label with no supervoxels); ``HEAD tarfile/BODY`` is
200 only when every supervoxel has a file; ``GET exists`` takes a JSON list of supervoxels and
answers a JSON list of booleans. Data are stored unversioned (DVID keeps them in the repo's
root context), so every node sees the same files.
"""

from __future__ import annotations

import io
import tarfile
from typing import Any

from .state import Calls, DvidHTTPError, InstanceCall, _bad, _json


class TarsupervoxelsCalls(Calls):
    """The calls of these instances (mixed into the request handler)."""

    def _tarsupervoxels(self, call: InstanceCall) -> tuple[int, Any, str]:
        method, node, inst, rest, params, body, unmatched = call.parts()
        state = self.server.state
        ext = inst.extension
        files = inst.keys.setdefault(inst.root, {})  # unversioned: the repo's root holds them

        def supervoxel(text: str) -> int:
            try:
                return int(text)
            except ValueError:
                raise _bad(f"bad supervoxel id {text!r}") from None

        if len(rest) == 2 and rest[0] == "supervoxel":
            key = f"{supervoxel(rest[1])}.{ext}"
            with state.lock:
                if method == "GET":
                    if files.get(key) is None:
                        raise DvidHTTPError(404, f"supervoxel {rest[1]} has no data in {inst.name}")
                    return 200, files[key], "application/octet-stream"
                if method == "POST":
                    files[key] = bytes(body)
                    return 200, b"", "text/plain"
                if method == "DELETE":
                    files.pop(key, None)
                    return 200, b"", "text/plain"
        if rest == ["load"] and method == "POST":
            try:
                with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
                    loaded = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
            except tarfile.TarError as exc:
                raise _bad(f"POST load of {inst.name}: not a tar file ({exc})") from None
            stored = {}
            for name, data in loaded.items():
                stem, _, found_ext = name.rpartition(".")
                if found_ext != ext or not stem.isdigit():
                    raise _bad(f"file {name!r} in the tar is not named SUPERVOXEL.{ext}")
                stored[f"{int(stem)}.{ext}"] = data
            with state.lock:
                files.update(stored)
            return 200, b"", "text/plain"
        if rest == ["exists"] and method == "GET":
            ids = _json(body)
            if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
                raise _bad("exists expects a JSON list of supervoxel ids")
            with state.lock:
                return 200, [bool(files.get(f"{i}.{ext}")) for i in ids], ""
        if len(rest) == 2 and rest[0] == "tarfile" and method in ("GET", "HEAD"):
            label = supervoxel(rest[1])
            with state.lock:
                synced = [state.instance(node, name) for name in inst.syncs]
                labelmaps = [s for s in synced if s.labelmap is not None]
                if not labelmaps:
                    raise _bad(f"data {inst.name!r} is not synced with any labelmap instance")
                lmap = labelmaps[0]
                index = lmap.labelmap.index_of(state.versions(lmap, node), label)  # type: ignore[union-attr]
                svs = sorted({sv for counts in (index or {}).values() for sv in counts})
                if not svs:
                    raise _bad(f"label {label} has no supervoxels")
                found = {sv: files.get(f"{sv}.{ext}") for sv in svs}
            if method == "HEAD":
                if any(v is None for v in found.values()):
                    raise _bad(f"not all supervoxel data available for label {label}")
                return 200, b"", "application/tar"
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                for sv, data in found.items():
                    member = tarfile.TarInfo(f"{sv}.{ext}" if data is not None else f"{sv}.missing")
                    member.size = len(data or b"")
                    member.mode = 0o755
                    tar.addfile(member, io.BytesIO(data or b""))
            return 200, buffer.getvalue(), "application/tar"
        raise unmatched
