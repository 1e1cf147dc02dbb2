"""``labelmap`` instances: compressed blocks, supervoxels, label indices, mappings, sizes, scales."""

from __future__ import annotations

import gzip
import zlib
import itertools
import struct
from typing import Any

import lz4.block
import numpy as np

from .. import _labelmap as lm

from .state import Calls, InstanceCall, DvidHTTPError, _Instance, _Node, _bad, _parse_triple, _check_request_size, _aligned, _json, _flag


class LabelmapCalls(Calls):
    """The calls of these instances (mixed into the request handler)."""

    def _labelmap(self, call: InstanceCall) -> tuple[int, Any, str]:
        """The labelmap endpoints of ``dvid-labelmap.md`` (called under the state's lock)."""
        method, node, inst, rest, params, body, unmatched = call.parts()
        state = self.server.state
        labelmap = inst.labelmap
        assert labelmap is not None and inst.block is not None
        versions = state.versions(inst, node)
        route = (method, rest[0], len(rest))
        needs_index = ("maxlabel", "nextlabel", "cleave", "merge", "split-supervoxel", "sparsevol", "sparsevol-coarse")
        if rest[0] in needs_index and not labelmap.indexed:
            raise lm.Refusal(f"{rest[0]} is not available: {inst.name} was created with IndexedLabels false")
        supervoxels = _flag(params, "supervoxels")

        def label_arg(text: str) -> int:
            try:
                return int(text)
            except ValueError:
                raise lm.Refusal(f"bad label {text!r}") from None

        def json_ids() -> list[int]:
            ids = _json(body)
            if not isinstance(ids, list) or not all(isinstance(i, int) and i >= 0 for i in ids):
                raise lm.Refusal("expected a JSON list of label ids")
            return ids

        if route == ("GET", "maxlabel", 1):
            top = labelmap.max_of(versions)
            if top is None:
                raise lm.Refusal(f"no max label has been recorded for {inst.name} yet")
            return 200, {"maxlabel": top}, ""
        if route == ("POST", "maxlabel", 2):
            if params.get("admintoken") != state.admin_token:
                raise lm.Refusal("setting the max label needs admin privileges (admintoken)")
            n = label_arg(rest[1])
            if not 1 <= n <= 2**48:
                raise lm.Refusal(f"max label {n} is not in 1..2^48")
            labelmap.raise_max(versions, n)
            return 200, b"", "text/plain"
        if rest[0] == "nextlabel":
            start = max(labelmap.nextlabel.get(versions[0], 0), (labelmap.max_of(versions) or 0) + 1)
            if route == ("GET", "nextlabel", 1):
                return 200, {"nextlabel": start}, ""
            if route == ("POST", "nextlabel", 2):
                k = label_arg(rest[1])
                if k < 1:
                    raise lm.Refusal("reserve at least one label")
                labelmap.nextlabel[versions[0]] = start + k
                return 200, {"start": start, "end": start + k - 1}, ""
        if route == ("GET", "label", 2) or route == ("GET", "labels", 1):
            points = [rest[1]] if rest[0] == "label" else _json(body)
            scale = self._scale(inst, params)
            found = []
            for point in points:
                z, y, x = _parse_triple(point, "point") if isinstance(point, str) else (point[2], point[1], point[0])
                found.append(state.read(inst, node, (z, y, x), (1, 1, 1), scale)[0, 0, 0])
            values = np.array(found, np.uint64)
            if not supervoxels:
                values = labelmap.mapped(versions, values)
            if rest[0] == "label":
                return 200, {"Label": int(values[0])}, ""
            return 200, [int(v) for v in values], ""
        if route == ("GET", "mapping", 1):
            svs = json_ids()
            if _flag(params, "nolookup"):
                mapping = labelmap.mapping_of(versions)
                return 200, [mapping.get(sv, sv) for sv in svs], ""
            return 200, [labelmap.body_of(versions, sv) for sv in svs], ""
        if route == ("GET", "mappings", 1):
            pairs = sorted((sv, b) for sv, b in labelmap.mapping_of(versions).items() if sv != b)
            if params.get("format") == "binary":
                return 200, np.array(pairs, "<u8").reshape(-1, 2).tobytes(), "application/octet-stream"
            return 200, "".join(f"{sv} {b}\n" for sv, b in pairs).encode(), "text/plain"
        if route == ("POST", "mappings", 1):
            ops = lm.parse_mapping_ops(body)
            mine = labelmap.mapping.setdefault(versions[0], {})
            for mutid, mapped, originals in ops:
                for sv in originals:
                    mine[int(sv)] = int(mapped)
                labelmap.mutid = max(labelmap.mutid, int(mutid))
            return 200, b"", "text/plain"
        if route in (("GET", "supervoxels", 2), ("GET", "supervoxel-sizes", 2)):
            label = label_arg(rest[1])
            if label == 0:
                raise lm.Refusal("label 0 is the background, not a body")
            index = labelmap.index_of(versions, label)
            if index is None:
                raise DvidHTTPError(404, f"label {label} not found")
            sizes: dict[int, int] = {}
            for counts in index.values():
                for sv, n in counts.items():
                    sizes[sv] = sizes.get(sv, 0) + n
            if rest[0] == "supervoxels":
                return 200, list(sizes), ""
            return 200, {"supervoxels": list(sizes), "sizes": list(sizes.values())}, ""
        if route == ("GET", "size", 2):
            n = labelmap.sizes_of(versions, label_arg(rest[1]), supervoxels)
            if n == 0:
                raise DvidHTTPError(404, f"label {rest[1]} has no voxels")
            return 200, {"voxels": n}, ""
        if route == ("GET", "sizes", 1):
            return 200, [labelmap.sizes_of(versions, i, supervoxels) for i in json_ids()], ""
        if route == ("GET", "index", 2):
            label = label_arg(rest[1])
            index = labelmap.index_of(versions, label)
            if index is None:
                raise DvidHTTPError(404, f"no label index for {label}")
            if _flag(params, "metadata-only"):
                voxels = sum(n for counts in index.values() for n in counts.values())
                return 200, {"num_voxels": voxels, "last_mutid": labelmap.mutid}, ""
            return 200, lm.label_index_message(label, index), "application/octet-stream"
        if route == ("POST", "index", 2):
            label, blocks, _ = lm.parse_label_index(body)
            if label == 0 or label != label_arg(rest[1]):
                raise lm.Refusal(f"label index for {label} posted to /index/{rest[1]}")
            labelmap.index.setdefault(versions[0], {})[label] = blocks or None
            return 200, b"", "text/plain"
        if route == ("GET", "indices", 1):
            ids = json_ids()
            if len(ids) > 50000:
                raise lm.Refusal(f"{len(ids)} labels requested; at most 50000 at once")
            out = b"".join(
                lm._len_field(1, lm.label_index_message(i, labelmap.index_of(versions, i) or {})) for i in ids
            )
            return 200, out, "application/octet-stream"
        if route == ("POST", "indices", 1):
            indices = lm.parse_label_indices(body)
            if any(label == 0 for label, _, _ in indices):
                raise lm.Refusal("a label index for label 0 cannot be stored")
            held = labelmap.index.setdefault(versions[0], {})
            for label, blocks, _ in indices:
                held[label] = blocks or None  # empty: a tombstone
                if blocks:
                    labelmap.raise_max(versions, label)
            return 200, b"", "text/plain"
        if route in (("POST", "blocks", 1), ("POST", "ingest-supervoxels", 1)):
            return self._post_blocks(node, inst, rest[0] == "blocks", params, body)
        if route == ("GET", "blocks", 3):
            return 200, self._block_stream(node, inst, rest, params), "application/octet-stream"
        if route == ("POST", "merge", 1):
            ids = json_ids()
            if len(ids) < 2 or 0 in ids:
                raise lm.Refusal("merge needs a target and at least one other label, none of them 0")
            target, *others = ids
            indices = {i: labelmap.index_of(versions, i) for i in ids}
            missing = [i for i, index in indices.items() if index is None]
            if missing:
                raise lm.Refusal(f"label {missing[0]} has no label index and cannot be merged")
            merged = labelmap.own_index(versions, target)
            assert merged is not None
            mine = labelmap.mapping.setdefault(versions[0], {})
            for other in others:
                for key, counts in (indices[other] or {}).items():
                    here = merged.setdefault(key, {})
                    for sv, n in counts.items():
                        here[sv] = here.get(sv, 0) + n
                        mine[sv] = target
                labelmap.index.setdefault(versions[0], {})[other] = None
            labelmap.mutid += 1
            return 200, {"MutationID": labelmap.mutid}, ""
        if route == ("POST", "cleave", 2):
            label = label_arg(rest[1])
            index = labelmap.index_of(versions, label)
            if index is None:
                raise lm.Refusal(f"body {label} has no label index and cannot be cleaved")
            cleaved = set(json_ids())
            held = {sv for counts in index.values() for sv in counts}
            if not cleaved or not cleaved <= held:
                raise lm.Refusal(f"cleave of body {label}: supervoxels {sorted(cleaved - held)[:5]} are not in it")
            if cleaved == held:
                raise lm.Refusal(f"cleave of body {label} would leave it with no supervoxels")
            new = max(labelmap.nextlabel.get(versions[0], 0), (labelmap.max_of(versions) or 0) + 1)
            remain = labelmap.own_index(versions, label)
            assert remain is not None
            moved: dict[int, dict[int, int]] = {}
            for key in list(remain):
                take = {sv: n for sv, n in remain[key].items() if sv in cleaved}
                if take:
                    moved[key] = take
                    remain[key] = {sv: n for sv, n in remain[key].items() if sv not in cleaved}
                    if not remain[key]:
                        del remain[key]
            labelmap.index.setdefault(versions[0], {})[new] = moved
            mine = labelmap.mapping.setdefault(versions[0], {})
            for sv in cleaved:
                mine[sv] = new
            labelmap.raise_max(versions, new)
            labelmap.mutid += 1
            return 200, {"CleavedLabel": new, "MutationID": labelmap.mutid}, ""
        if rest[0] == "maxlabel":
            raise unmatched
        raise unmatched

    def _post_blocks(self, node: _Node, inst: _Instance, indexing_call: bool, params: dict[str, str], body: bytes) -> tuple[int, Any, str]:
        """``POST /blocks`` (extents, maxlabel, indexing unless ``noindexing``, downres if asked)
        and ``POST /ingest-supervoxels`` (store only): records ``int32 bx, by, bz, nbytes`` and
        a gzipped compressed block. Records before a bad one stay stored, as in DVID."""
        state = self.server.state
        labelmap = inst.labelmap
        assert labelmap is not None and inst.block is not None
        scale = self._scale(inst, params)
        downres = _flag(params, "downres")
        if indexing_call and params.get("compression", "") not in ("", "blocks"):
            raise lm.Refusal(f"POST /blocks takes compression=blocks, not {params.get('compression')!r}")
        if downres and scale:
            raise lm.Refusal("downres=true is only allowed at scale 0")
        if labelmap is not None and inst.compression != "gzip":
            raise lm.Refusal(f"{inst.name} does not store gzip blocks (Compression {inst.compression}); cannot post blocks")
        versions = state.versions(inst, node)
        bs = inst.block
        touched: set[tuple[int, ...]] = set()
        pos = 0
        while pos < len(body):
            if pos + 16 > len(body):
                raise lm.Refusal("block record header cut short")
            bx, by, bz, nbytes = struct.unpack_from("<4i", body, pos)
            pos += 16
            if nbytes <= 0 or pos + nbytes > len(body):
                raise lm.Refusal(f"block ({bx},{by},{bz}) has a bad length {nbytes}")
            try:
                inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                raw = inflate.decompress(body[pos : pos + nbytes], 32 * int(np.prod(bs)) + 4096)
            except zlib.error as exc:
                raise lm.Refusal(f"block ({bx},{by},{bz}) is not gzip data: {exc}") from None
            pos += nbytes
            block = lm.decode_block(raw, bs)
            key = (bz, by, bx)
            start = tuple(k * b for k, b in zip(key, bs))

            def index(k: tuple[int, ...], old: np.ndarray | None, new: np.ndarray) -> None:
                if indexing_call and not scale and labelmap.indexed and not _flag(params, "noindexing"):
                    labelmap.index_block(versions, lm.pack_key(*k), old, new, True)

            state.write(inst, node, start, block, scale=scale, on_block=index, extents=indexing_call)
            if indexing_call and not scale:
                labelmap.raise_max(versions, int(block.max()))
                touched.add(key)
        if downres:
            state.downres(inst, node, touched)
        return 200, b"", "text/plain"

    def _block_stream(self, node: _Node, inst: _Instance, rest: list[str], params: dict[str, str]) -> bytes:
        """``GET blocks/{size}/{offset}``: records of ``int32 bx, by, bz, nbytes`` then the
        block (raw LZ4 or uncompressed uint64), for written blocks only, x fastest."""
        assert inst.block is not None
        z0, y0, x0 = _parse_triple(rest[2], "offset")
        nz, ny, nx = _parse_triple(rest[1], "size", positive=True)
        _check_request_size(self.server.state, nz * ny * nx)
        if not _aligned((z0, y0, x0), (nz, ny, nx), inst.block):
            raise _bad(f"block requests must be block aligned: {rest[1]} at {rest[2]} (block size {list(inst.block[::-1])})")
        compression = params.get("compression", "lz4")
        allowed = ("lz4", "uncompressed") + (("gzip", "blocks") if inst.labelmap is not None else ())
        if compression not in allowed:
            raise _bad(f"{inst.typename} streams blocks as {', '.join(allowed)}, not {compression!r}")
        state = self.server.state
        scale = self._scale(inst, params)
        stored = state.stored_blocks(inst, node, scale)
        versions = state.versions(inst, node)
        out = bytearray()
        ranges = [range(s // b, (s + n) // b) for s, n, b in zip((z0, y0, x0), (nz, ny, nx), inst.block)]
        with state.lock:
            for key in itertools.product(*ranges):
                block = state.block_at(stored, key)
                if block is None:
                    continue
                if inst.labelmap is not None and not _flag(params, "supervoxels"):
                    block = inst.labelmap.mapped(versions, block)
                data = block.astype("<u8").tobytes()
                if compression == "lz4":
                    data = lz4.block.compress(data, store_size=False)
                elif compression == "gzip":
                    data = gzip.compress(data)
                elif compression == "blocks":
                    data = gzip.compress(lm.encode_block(block))
                out += np.array([key[2], key[1], key[0], len(data)], "<i4").tobytes() + data
        return bytes(out)
