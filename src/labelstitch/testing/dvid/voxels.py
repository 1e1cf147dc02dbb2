"""Block instances (``uint8blk``, ``labelblk``, ``labelarray``, ``labelmap``): raw voxels at any geometry, and the calls every label type shares."""

from __future__ import annotations

import gzip
import zlib
import itertools
from typing import Any

import lz4.block
import numpy as np

from .. import _labelmap as lm

from .state import Calls, InstanceCall, DvidHTTPError, _Instance, _bad, _parse_triple, _check_request_size, _aligned, _flag, LABEL_TYPES, _DTYPE


class VoxelCalls(Calls):
    """The calls of these instances (mixed into the request handler)."""

    def _voxels(self, call: InstanceCall) -> tuple[int, Any, str]:
        method, node, inst, rest, params, body, unmatched = call.parts()
        state = self.server.state
        labels = inst.typename in LABEL_TYPES
        if inst.labelmap is not None and rest and rest[0] not in ("raw", "isotropic", "info"):
            try:
                with state.lock:
                    return self._labelmap(call)
            except lm.Refusal as exc:
                raise DvidHTTPError(exc.status, exc.message) from None
        if labels and rest == ["maxlabel"] and method == "GET" and inst.typename != "labelblk":
            top = 0
            with state.lock:  # only the blocks this version sees, not ones a child overwrote
                stored = state.stored_blocks(inst, node)
                for key in set().union(*stored):
                    top = max(top, int(state.block_at(stored, key).max()))  # type: ignore[union-attr]
            return 200, {"maxlabel": top}, ""
        if labels and len(rest) == 2 and rest[0] == "label" and method == "GET":
            z, y, x = _parse_triple(rest[1], "point")
            return 200, {"Label": int(state.read(inst, node, (z, y, x), (1, 1, 1))[0, 0, 0])}, ""
        if labels and len(rest) == 3 and rest[0] == "blocks" and method == "GET":
            return 200, self._block_stream(node, inst, rest, params), "application/octet-stream"
        if len(rest) < 4 or rest[0] not in ("raw", "isotropic"):
            raise unmatched
        scale = self._scale(inst, params)
        if scale and method != "GET":
            raise _bad("raw POSTs are always scale 0")
        dims = rest[1]
        if dims == "0_1_2":
            z0, y0, x0 = _parse_triple(rest[3], "offset")
            nz, ny, nx = _parse_triple(rest[2], "size", positive=True)
        elif dims == "0_1" and method == "GET":
            try:
                nx, ny = (int(v) for v in rest[2].split("_"))
            except ValueError:
                raise _bad(f"bad 2-D size {rest[2]!r}; expected nx_ny") from None
            z0, y0, x0 = _parse_triple(rest[3], "offset")
            nz = 1
        elif dims == "0_1":
            raise _bad("DVID does not accept 2-D POSTs of voxels")
        else:
            raise _bad(f"this server serves 3-D (0_1_2) and xy (0_1) raw requests, not {dims!r}")
        _check_request_size(state, nz * ny * nx)
        compression = params.get("compression", "")
        if labels and compression not in ("", "none", "lz4", "gzip"):
            raise _bad(f"unknown compression {compression!r}; use lz4, gzip or none")
        roi = self._roi_of(node, params.get("roi"))
        if method == "GET":
            with state.lock:
                data = state.read(inst, node, (z0, y0, x0), (nz, ny, nx), scale)
                if inst.labelmap is not None and not _flag(params, "supervoxels"):
                    data = inst.labelmap.mapped(state.versions(inst, node), data)
            if roi is not None:
                self._mask_outside(data, (z0, y0, x0), lambda key: key in roi[0], roi[1])
            raw = data.astype(_DTYPE[inst.typename], copy=False).tobytes()
            if labels and compression == "lz4":
                raw = lz4.block.compress(raw, store_size=False)
            elif labels and compression == "gzip":
                raw = gzip.compress(raw)
            return 200, raw, "application/octet-stream"
        if method != "POST":
            raise unmatched
        assert inst.block is not None
        if not _aligned((z0, y0, x0), (nz, ny, nx), inst.block):
            what = f"labels for data \"{inst.name}\"" if labels else "voxels"
            raise _bad(
                f"cannot store {what} in non-block aligned geometry {x0}_{y0}_{z0} -> "
                f"{x0 + nx - 1}_{y0 + ny - 1}_{z0 + nz - 1} (block size {list(inst.block[::-1])})"
            )
        itemsize = _DTYPE[inst.typename].itemsize
        expected = nx * ny * nz * itemsize
        if labels and compression == "lz4":
            if not body:
                raise _bad("received 0 LZ4 compressed bytes")
            try:
                body = lz4.block.decompress(body, uncompressed_size=expected)
            except Exception as exc:
                raise _bad(f"cannot decompress LZ4 body: {exc}") from None
        elif labels and compression == "gzip":
            try:
                inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing
                body = inflate.decompress(body, expected + 1)  # never inflates past what the box can hold
            except Exception as exc:
                raise _bad(f"cannot decompress gzip body: {exc}") from None
        if len(body) != expected:
            raise _bad(f"expected {expected} bytes for a {nx}x{ny}x{nz} volume of {inst.typename}, got {len(body)}")
        data = np.frombuffer(body, _DTYPE[inst.typename]).reshape(nz, ny, nx)
        keep = None
        if roi is not None:
            blocks, size = roi
            bs = inst.block

            def keep(key: tuple[int, ...]) -> bool:  # a data block is written if it meets the ROI
                ranges = [range(k * b // size, -(-(k + 1) * b // size)) for k, b in zip(key, bs)]
                return any(r in blocks for r in itertools.product(*ranges))

        if inst.labelmap is None:
            state.write(inst, node, (z0, y0, x0), data, keep)
            return 200, b"", "text/plain"
        # labelmap: the voxels are supervoxels; DVID indexes them (diffing the old block only
        # with mutate=true), raises maxlabel and recomputes the scales above before replying
        labelmap, mutate = inst.labelmap, _flag(params, "mutate")
        with state.lock:
            versions = state.versions(inst, node)
            touched: set[tuple[int, ...]] = set()

            def index(key: tuple[int, ...], old: np.ndarray | None, new: np.ndarray) -> None:
                touched.add(key)
                if labelmap.indexed:
                    labelmap.index_block(versions, lm.pack_key(*key), old, new, mutate)

            state.write(inst, node, (z0, y0, x0), data, keep, on_block=index)
            if data.size:
                labelmap.raise_max(versions, int(data.max()))
            state.downres(inst, node, touched)
        return 200, b"", "text/plain"

    @staticmethod
    def _scale(inst: _Instance, params: dict[str, str]) -> int:
        """The ``scale`` parameter, checked against the instance's levels."""
        try:
            scale = int(params.get("scale", "0"))
        except ValueError:
            raise _bad(f"bad scale {params.get('scale')!r}") from None
        top = inst.labelmap.max_level if inst.labelmap is not None else 0
        if not 0 <= scale <= top:
            raise _bad(f"scale {scale} is not available from {inst.name} (its MaxDownresLevel is {top})")
        return scale
