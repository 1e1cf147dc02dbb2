"""``roi`` instances: block runs, partition, point queries, masks."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np


from .state import Calls, InstanceCall, _Node, _bad, _runs, _parse_triple, _json


class RoiCalls(Calls):
    """The calls of these instances (mixed into the request handler)."""

    def _roi_of(self, node: _Node, name: str | None) -> tuple[set[tuple[int, int, int]], int] | None:
        """The blocks and block size of the ROI named by ``roi=`` (None without it)."""
        if not name:
            return None
        state = self.server.state
        roi = state.instance(node, name)
        if roi.typename != "roi":
            raise _bad(f"{name} is a {roi.typename}, not a roi")
        assert roi.block is not None
        return state.roi_blocks(roi, node), roi.block[0]

    @staticmethod
    def _mask_outside(data: np.ndarray, start: tuple[int, int, int], keep: Any, block: int) -> None:
        stop = [s + n for s, n in zip(start, data.shape)]
        for key in itertools.product(*(range(s // block, -(-e // block)) for s, e in zip(start, stop))):
            if not keep(key):
                lo = [max(k * block, s) - s for k, s in zip(key, start)]
                hi = [min((k + 1) * block, e) - s for k, e, s in zip(key, stop, start)]
                data[tuple(slice(a, b) for a, b in zip(lo, hi))] = 0

    def _roi(self, call: InstanceCall) -> tuple[int, Any, str]:
        method, node, inst, rest, params, body, unmatched = call.parts()
        state = self.server.state
        assert inst.block is not None
        if rest == ["roi"] and method == "GET":
            with state.lock:
                return 200, _runs(state.roi_blocks(inst, node)), ""
        if rest == ["roi"] and method == "POST":
            runs = _json(body)
            if not isinstance(runs, list) or any(not isinstance(r, list) or len(r) != 4 for r in runs):
                raise _bad("an ROI is a JSON list of [z, y, x0, x1] runs")
            blocks = set(state.roi_blocks(inst, node))
            for z, y, x0, x1 in runs:
                if x1 < x0:
                    raise _bad(f"ROI run {[z, y, x0, x1]} ends before it starts")
                blocks.update((int(z), int(y), x) for x in range(int(x0), int(x1) + 1))
            with state.lock:
                inst.roi[state.write_node(inst, node)] = blocks
            return 200, b"", "text/plain"
        if rest == ["roi"] and method == "DELETE":
            with state.lock:
                inst.roi[state.write_node(inst, node)] = set()
            return 200, b"", "text/plain"
        blocks = state.roi_blocks(inst, node)
        if rest == ["partition"] and method == "GET":
            try:
                batch = int(params.get("batchsize", "8"))
            except ValueError:
                raise _bad(f"bad batchsize {params.get('batchsize')!r}") from None
            if batch < 1:
                raise _bad("batchsize must be positive")
            return 200, self._partition(blocks, batch, inst.block[0]), ""
        if rest == ["ptquery"] and method == "POST":
            points = _json(body)
            b = inst.block
            return 200, [(p[2] // b[0], p[1] // b[1], p[0] // b[2]) in blocks for p in points], ""
        if len(rest) == 4 and rest[:2] == ["mask", "0_1_2"] and method == "GET":
            z0, y0, x0 = _parse_triple(rest[3], "offset")
            shape = _parse_triple(rest[2], "size", positive=True)
            mask = np.ones(shape, np.uint8)
            self._mask_outside(mask, (z0, y0, x0), lambda key: key in blocks, inst.block[0])
            return 200, mask.tobytes(), "application/octet-stream"
        raise unmatched

    @staticmethod
    def _partition(blocks: set[tuple[int, int, int]], batch: int, size: int) -> dict[str, Any]:
        if not blocks:
            return {"NumTotalBlocks": 0, "NumActiveBlocks": 0, "NumSubvolumes": 0, "ROI": None, "Subvolumes": []}
        arr = np.array(sorted(blocks))
        low, high = arr.min(axis=0), arr.max(axis=0)
        tiles: dict[tuple[int, ...], int] = {}
        for key in map(tuple, (arr - low) // batch):
            tiles[key] = tiles.get(key, 0) + 1
        subvolumes = []
        for key in sorted(tiles):
            chunk = [int(v) for v in low + np.array(key) * batch][::-1]  # x, y, z
            subvolumes.append(
                {
                    "MinPoint": [c * size for c in chunk],
                    "MaxPoint": [(c + batch) * size - 1 for c in chunk],
                    "MinChunk": chunk,
                    "MaxChunk": [c + batch - 1 for c in chunk],
                    "TotalBlocks": batch**3,
                    "ActiveBlocks": tiles[key],
                }
            )
        return {
            "NumTotalBlocks": batch**3 * len(tiles),
            "NumActiveBlocks": len(blocks),
            "NumSubvolumes": len(tiles),
            "ROI": {"MinChunk": [int(v) for v in low[::-1]], "MaxChunk": [int(v) for v in high[::-1]]},
            "Subvolumes": subvolumes,
        }
