"""A small DVID server, in pure Python, for tests and demos.

It implements the subset of DVID's REST API that a segmentation pipeline uses, following
``shared/docs/dvid-api.md`` (section 8) to the letter: repos and their version DAG
(commit, newversion, branch, copy-on-write by block), ``uint8blk`` grayscale and
``labelblk``/``labelarray``/``labelmap`` labels (raw GET at any geometry, block-aligned raw
POST, uint64 little-endian, raw LZ4 block framing), ``roi`` (runs, partition, ptquery,
mask), ``keyvalue``, and throttling (``throttle=on``: at most ``max_throttled_ops`` at once,
503 beyond). Status codes are DVID's: 400 for nearly every error, unknown instances
included; 404 only for unmatched routes, missing keys and missing sparse volumes.

For fault tests the server can also answer a share of requests with 503, drop
connections without replying, or answer slowly (see :class:`Faults`).

Run it by hand::

    python -m labelstitch.testing.dvid --port 8000

or from Python (port 0 picks a free port)::

    >>> from labelstitch.testing.dvid import DvidTestServer
    >>> with DvidTestServer() as server:
    ...     server.address.startswith("127.0.0.1:")
    True
"""

from __future__ import annotations

import argparse
import gzip
import zlib
import itertools
import json
import random
import socket
import struct
import threading
import time
import uuid as uuidlib
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import lz4.block
import numpy as np

from . import _labelmap as lm

__all__ = ["DvidTestServer", "DvidState", "Faults"]

LABEL_TYPES = ("labelblk", "labelarray", "labelmap")
BLOCK_TYPES = ("uint8blk",) + LABEL_TYPES
KNOWN_TYPES = BLOCK_TYPES + ("roi", "keyvalue", "labelvol")
_DTYPE = {"uint8blk": np.dtype("<u1"), "labelblk": np.dtype("<u8"), "labelarray": np.dtype("<u8"), "labelmap": np.dtype("<u8")}


class DvidHTTPError(Exception):
    """An error reply: status code and DVID's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _bad(message: str) -> DvidHTTPError:
    return DvidHTTPError(400, message)


@dataclass
class Faults:
    """Misbehaviour injected into every ``/api`` request, for the client's fault tests.

    error_rate : share of requests answered 503 ("unavailable"), drawn at random
    drop_rate : share of requests whose connection is closed without any reply
    stall_rate, stall : share of requests answered only after ``stall`` seconds (longer
        than a client's timeout, the request then times out there)
    delay : seconds to wait before answering each request (a slow server)
    force_503 : the next this-many *throttled* requests get 503 (the hook of section 8.10)
    """

    error_rate: float = 0.0
    drop_rate: float = 0.0
    stall_rate: float = 0.0
    stall: float = 1.0
    delay: float = 0.0
    force_503: int = 0
    seed: int = 0
    stalled: int = 0  # how many requests were stalled so far
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        self.rng.seed(self.seed)


@dataclass
class _Node:
    uuid: str
    root: str
    parent: _Node | None
    branch: str
    note: str = ""
    locked: bool = False
    children: list[str] = field(default_factory=list)
    version: int = 0

    def ancestry(self) -> list[str]:
        node: _Node | None = self
        out = []
        while node is not None:
            out.append(node.uuid)
            node = node.parent
        return out


@dataclass
class _Instance:
    name: str
    typename: str
    root: str
    block: tuple[int, int, int] | None  # (z, y, x)
    versioned: bool = True
    compression: str = "lz4"
    tags: dict[str, str] = field(default_factory=dict)
    voxel_size: list[float] = field(default_factory=lambda: [8.0, 8.0, 8.0])
    syncs: list[str] = field(default_factory=list)
    data_uuid: str = field(default_factory=lambda: uuidlib.uuid4().hex)
    # per node: block coordinate (z, y, x) -> block array; roi runs; key -> bytes
    blocks: dict[str, dict[tuple[int, int, int], np.ndarray]] = field(default_factory=dict)
    roi: dict[str, set[tuple[int, int, int]]] = field(default_factory=dict)
    keys: dict[str, dict[str, bytes | None]] = field(default_factory=dict)
    min_point: list[int] | None = None  # x, y, z
    max_point: list[int] | None = None
    labelmap: lm.LabelmapData | None = None  # supervoxels, mapping, indices, scales (labelmap only)


class DvidState:
    """Everything the server stores: repos, version DAGs, instances and their data.

    Kept apart from the HTTP server so a test can stop the server and start a new one on
    the same port with the same data ("the server went down and came back").
    """

    def __init__(
        self,
        *,
        max_throttled_ops: int = 1,
        faults: Faults | None = None,
        max_request_voxels: int = 2**28,
        max_body_bytes: int = 2**30,
    ) -> None:
        #: the largest box one raw or block request may ask for (larger ones get 413)
        self.max_request_voxels = max_request_voxels
        #: the largest request body, compressed or decompressed (larger ones get 413)
        self.max_body_bytes = max_body_bytes
        self.lock = threading.RLock()
        self.nodes: dict[str, _Node] = {}
        self.repos: dict[str, dict[str, Any]] = {}
        self.instances: dict[str, dict[str, _Instance]] = {}  # root -> name -> instance
        self.max_throttled_ops = max_throttled_ops
        self.active_throttled = 0
        self.throttle_lock = threading.Lock()
        self.faults = faults or Faults()
        self.log: deque[tuple[str, str, dict[str, str]]] = deque(maxlen=10000)
        self.status_counts: dict[int, int] = {}
        #: the ``admintoken`` that admin-only calls (``POST /maxlabel``) need
        self.admin_token = "labelstitch-test-admin"

    # ------------------------------------------------------------------ lookups

    def node(self, spec: str) -> _Node:
        """Resolve a UUID, a unique prefix, or ``prefix:branch`` (the branch's leaf)."""
        prefix, _, branch = spec.partition(":")
        found = [n for u, n in self.nodes.items() if u.startswith(prefix.lower())] if prefix else []
        if not found:
            raise _bad(f"could not find UUID with partial match to {prefix!r}")
        roots = {n.root for n in found}
        if len(found) > 1 and not branch:
            raise _bad(f"more than one UUID matches {prefix!r}")
        if not branch:
            return found[0]
        if len(roots) > 1:
            raise _bad(f"more than one repo matches {prefix!r}")
        wanted = "" if branch == "master" else branch
        on_branch = [n for n in self.nodes.values() if n.root == found[0].root and n.branch == wanted]
        leaves = [n for n in on_branch if not any(self.nodes[c].branch == wanted for c in n.children)]
        if not leaves:
            raise _bad(f"no branch {branch!r} in the repo of {prefix!r}")
        return max(leaves, key=lambda n: n.version)

    def instance(self, node: _Node, name: str) -> _Instance:
        inst = self.instances[node.root].get(name)
        if inst is None:
            raise _bad(f'invalid data instance name "{name}" for node {node.uuid}')
        return inst

    def versions(self, inst: _Instance, node: _Node) -> list[str]:
        """Nodes whose writes ``node`` sees, nearest first (copy-on-write along the DAG)."""
        return [inst.root] if not inst.versioned else node.ancestry()

    def write_node(self, inst: _Instance, node: _Node) -> str:
        return inst.root if not inst.versioned else node.uuid

    # ------------------------------------------------------------------ repos and versions

    def new_repo(self, alias: str = "", description: str = "") -> str:
        with self.lock:
            root = uuidlib.uuid4().hex
            self.nodes[root] = _Node(root, root, None, "")
            self.repos[root] = {"alias": alias, "description": description, "created": time.time()}
            self.instances[root] = {}
            return root

    def child(self, parent: _Node, note: str, branch: str | None) -> str:
        with self.lock:
            if not parent.locked:
                raise _bad(f"can't branch from unlocked node {parent.uuid}; commit it first")
            if branch is not None:
                if not branch or any(n.root == parent.root and n.branch == branch for n in self.nodes.values()):
                    raise _bad(f"branch name {branch!r} is empty or already used in this repo")
            child = uuidlib.uuid4().hex
            version = max(n.version for n in self.nodes.values() if n.root == parent.root) + 1
            self.nodes[child] = _Node(child, parent.root, parent, parent.branch if branch is None else branch, note, False, [], version)
            parent.children.append(child)
            return child

    def repo_info(self, root: str) -> dict[str, Any]:
        repo = self.repos[root]
        return {
            "Root": root,
            "Alias": repo["alias"],
            "Description": repo["description"],
            "DataInstances": {name: self.info(inst)["Base"] for name, inst in self.instances[root].items()},
            "DAG": {
                "Root": root,
                "Nodes": {
                    n.uuid: {
                        "UUID": n.uuid,
                        "Branch": n.branch,
                        "Note": n.note,
                        "Locked": n.locked,
                        "Parents": [n.parent.uuid] if n.parent else [],
                        "Children": list(n.children),
                        "VersionID": n.version,
                    }
                    for n in self.nodes.values()
                    if n.root == root
                },
            },
        }

    # ------------------------------------------------------------------ instances

    def add_instance(self, node: _Node, spec: dict[str, Any]) -> str:
        with self.lock:
            if node.locked:
                raise _bad(f"Cannot do POST on locked node {node.uuid}")
            not_strings = [k for k, v in spec.items() if not isinstance(v, str)]
            if not_strings:  # DVID's NewData: every value of the instance config is a JSON string
                raise _bad(f"configuration key {not_strings[0]!r} was not a string")
            spec = {k.lower(): v for k, v in spec.items()}  # keys are case-insensitive
            typename, name = spec.get("typename"), spec.get("dataname")
            if not typename or not name:
                raise _bad('instance creation needs "typename" and "dataname"')
            if typename not in KNOWN_TYPES:
                raise _bad(f'unknown datatype "{typename}"; this server knows {", ".join(KNOWN_TYPES)}')
            if name in self.instances[node.root]:
                raise _bad(f'data "{name}" already exists in repo {node.root}')
            block = None
            if typename in BLOCK_TYPES or typename == "roi":
                default = "64,64,64" if typename in ("labelarray", "labelmap") else "32,32,32"
                try:
                    xyz = [int(v) for v in str(spec.get("blocksize", default)).split(",")]
                except ValueError:
                    raise _bad(f"bad BlockSize {spec.get('blocksize')!r}; expected 'x,y,z'") from None
                if len(xyz) != 3 or min(xyz) < 1:
                    raise _bad(f"bad BlockSize {spec.get('blocksize')!r}; expected 3 positive ints 'x,y,z'")
                if typename == "labelmap" and any(v % 16 for v in xyz):
                    raise _bad(f"labelmap BlockSize {spec.get('blocksize')!r} must be multiples of 16")
                block = (xyz[2], xyz[1], xyz[0])
            labelmap = None
            if typename == "labelmap":
                try:
                    levels = int(spec.get("maxdownreslevel", "0"))
                except ValueError:
                    raise _bad(f"bad MaxDownresLevel {spec.get('maxdownreslevel')!r}") from None
                if not 0 <= levels <= 255:
                    raise _bad(f"MaxDownresLevel {levels} is not in 0..255")
                labelmap = lm.LabelmapData(indexed=spec.get("indexedlabels", "true").lower() != "false", max_level=levels)
            tags = dict(t.split("=", 1) for t in str(spec.get("tags", "")).split(",") if "=" in t)
            voxel = [float(v) for v in str(spec.get("voxelsize", "8,8,8")).split(",")]
            self.instances[node.root][name] = _Instance(
                name,
                typename,
                node.root,
                block,
                versioned=str(spec.get("versioned", "true")).lower() != "false",
                compression=str(spec.get("compression", "gzip" if typename == "labelmap" else "lz4")),
                tags=tags,
                voxel_size=voxel,
                labelmap=labelmap,
            )
            return f"Added {name} [{typename}] to node {node.uuid}"

    def info(self, inst: _Instance, node: _Node | None = None) -> dict[str, Any]:
        base = {
            "TypeName": inst.typename,
            "TypeURL": f"github.com/janelia-flyem/dvid/datatype/{inst.typename}",
            "Name": inst.name,
            "DataUUID": inst.data_uuid,
            "RepoUUID": inst.root,
            "Compression": inst.compression,
            "Checksum": "No checksum",
            "Syncs": list(inst.syncs),
            "Versioned": inst.versioned,
            "Tags": dict(inst.tags),
        }
        if inst.typename == "roi":
            assert inst.block is not None
            zs = [b[0] for blocks in inst.roi.values() for b in blocks]
            return {
                "Base": base,
                "Extended": {"BlockSize": list(inst.block[::-1]), "MinZ": min(zs, default=0), "MaxZ": max(zs, default=0)},
            }
        if inst.typename not in BLOCK_TYPES:
            return {"Base": base, "Extended": {}}
        assert inst.block is not None
        bs = list(inst.block[::-1])
        min_index = [p // b for p, b in zip(inst.min_point, bs)] if inst.min_point else None
        max_index = [p // b for p, b in zip(inst.max_point, bs)] if inst.max_point else None
        extended = {
            "BlockSize": bs,
            "VoxelSize": inst.voxel_size,
            "VoxelUnits": ["nanometers"] * 3,
            "MinPoint": inst.min_point,
            "MaxPoint": inst.max_point,
            "MinIndex": min_index,
            "MaxIndex": max_index,
            "Background": 0,
        }
        if inst.labelmap is not None:
            versions = self.versions(inst, node) if node is not None else [inst.root]
            top = inst.labelmap.max_of(versions) or 0
            extended.update({
                "MaxLabel": top, "MaxRepoLabel": top, "NextLabel": inst.labelmap.nextlabel.get(versions[0], 0),
                "IndexedLabels": inst.labelmap.indexed, "MaxDownresLevel": inst.labelmap.max_level,
            })
        out = {"Base": base, "Extended": extended}
        if inst.typename in ("uint8blk", "labelblk"):
            out["Extents"] = {"MinPoint": inst.min_point, "MaxPoint": inst.max_point}
        return out

    # ------------------------------------------------------------------ voxels

    def stored_blocks(self, inst: _Instance, node: _Node, scale: int = 0) -> list[dict[tuple[int, int, int], np.ndarray]]:
        """The block dicts ``node`` sees at ``scale``, nearest version first."""
        if scale:
            assert inst.labelmap is not None
            return [inst.labelmap.lowres.get((v, scale), {}) for v in self.versions(inst, node)]
        return [inst.blocks.get(v, {}) for v in self.versions(inst, node)]

    @staticmethod
    def block_at(stored: list[dict[tuple[int, int, int], np.ndarray]], key: tuple[int, ...]) -> np.ndarray | None:
        """The block at ``key`` as the nearest version wrote it (None: never written)."""
        return next((versions[key] for versions in stored if key in versions), None)  # type: ignore[index]

    def read(self, inst: _Instance, node: _Node, start: tuple[int, ...], shape: tuple[int, ...], scale: int = 0) -> np.ndarray:
        """Voxels of a (z, y, x) box at any geometry (in ``scale``'s voxels); never-written
        regions are 0."""
        assert inst.block is not None
        out = np.zeros(shape, _DTYPE[inst.typename])
        bs = inst.block
        stop = [s + n for s, n in zip(start, shape)]
        stored = self.stored_blocks(inst, node, scale)
        ranges = [range(s // b, -(-e // b)) for s, e, b in zip(start, stop, bs)]
        with self.lock:
            for key in itertools.product(*ranges):
                block = self.block_at(stored, key)
                if block is None:
                    continue
                lo = [max(k * b, s) for k, b, s in zip(key, bs, start)]
                hi = [min((k + 1) * b, e) for k, b, e in zip(key, bs, stop)]
                out[tuple(slice(a - s, c - s) for a, c, s in zip(lo, hi, start))] = block[
                    tuple(slice(a - k * b, c - k * b) for a, c, k, b in zip(lo, hi, key, bs))
                ]
        return out

    def write(
        self, inst: _Instance, node: _Node, start: tuple[int, ...], data: np.ndarray, keep: Any = None, scale: int = 0,
        on_block: Any = None, extents: bool = True,
    ) -> int:
        """Store block-aligned ``data`` at ``start`` in ``node`` only; ``keep(block_key)``
        filters blocks (the ``roi=`` parameter); ``on_block(key, old, new)`` sees each
        (labelmap indexing). Returns the number of blocks written."""
        assert inst.block is not None
        bs = inst.block
        written = 0
        with self.lock:
            if scale:
                assert inst.labelmap is not None
                stored = inst.labelmap.lowres.setdefault((self.write_node(inst, node), scale), {})
            else:
                stored = inst.blocks.setdefault(self.write_node(inst, node), {})
            first = [s // b for s, b in zip(start, bs)]
            for index in itertools.product(*(range(n // b) for n, b in zip(data.shape, bs))):
                key = tuple(f + i for f, i in zip(first, index))
                if keep is not None and not keep(key):
                    continue
                sl = tuple(slice(i * b, (i + 1) * b) for i, b in zip(index, bs))
                new = np.array(data[sl], dtype=_DTYPE[inst.typename])  # type: ignore[index]
                if on_block is not None:
                    on_block(key, self.block_at(self.stored_blocks(inst, node, scale), key), new)
                stored[key] = new
                written += 1
                if scale or not extents:
                    continue
                lo = [k * b for k, b in zip(key, bs)][::-1]
                hi = [(k + 1) * b - 1 for k, b in zip(key, bs)][::-1]
                inst.min_point = lo if inst.min_point is None else [min(a, b) for a, b in zip(inst.min_point, lo)]
                inst.max_point = hi if inst.max_point is None else [max(a, b) for a, b in zip(inst.max_point, hi)]
        return written

    def downres(self, inst: _Instance, node: _Node, keys: set[tuple[int, ...]]) -> None:
        """Recompute scales 1..MaxDownresLevel above the scale-0 blocks ``keys`` (DVID's
        downres after ``/raw`` and ``/blocks?downres=true``), from the stored supervoxels."""
        assert inst.labelmap is not None and inst.block is not None
        bs = inst.block
        with self.lock:
            for scale in range(1, inst.labelmap.max_level + 1):
                keys = {tuple(k // 2 for k in key) for key in keys}
                for key in keys:
                    start = tuple(2 * k * b for k, b in zip(key, bs))
                    data = self.read(inst, node, start, tuple(2 * b for b in bs), scale - 1)
                    self.write(inst, node, tuple(k * b for k, b in zip(key, bs)), lm.downsample(data), scale=scale)

    def roi_blocks(self, inst: _Instance, node: _Node) -> set[tuple[int, int, int]]:
        for version in self.versions(inst, node):
            if version in inst.roi:
                return inst.roi[version]
        return set()


# ---------------------------------------------------------------------------- helpers


def _runs(blocks: set[tuple[int, int, int]]) -> list[list[int]]:
    """Sorted, merged ``[z, y, x0, x1]`` runs (x1 inclusive) of a set of (z, y, x) blocks."""
    runs: list[list[int]] = []
    for z, y, x in sorted(blocks):
        if runs and runs[-1][0] == z and runs[-1][1] == y and runs[-1][3] == x - 1:
            runs[-1][3] = x
        else:
            runs.append([z, y, x, x])
    return runs


def _parse_triple(text: str, what: str, *, positive: bool = False) -> tuple[int, int, int]:
    """``"x_y_z"`` -> ``(z, y, x)``."""
    try:
        xyz = [int(v) for v in text.split("_")]
    except ValueError:
        raise _bad(f"bad {what} {text!r}; expected x_y_z integers") from None
    if len(xyz) != 3 or (positive and min(xyz) < 1):
        raise _bad(f"bad {what} {text!r}; expected 3 {'positive ' if positive else ''}integers x_y_z")
    return xyz[2], xyz[1], xyz[0]


def _check_request_size(state: DvidState, voxels: int) -> None:
    """413 for a box too large to serve (DVID itself would run out of memory)."""
    if voxels > state.max_request_voxels:
        raise DvidHTTPError(413, f"request for {voxels} voxels is over this server's limit of {state.max_request_voxels}")


def _aligned(start: tuple[int, ...], size: tuple[int, ...], block: tuple[int, ...]) -> bool:
    """Whether a box's offset and size are whole multiples of the block size."""
    return not any(v % b for v, b in zip(start + size, block * 2))


def _json(body: bytes) -> Any:
    try:
        return json.loads(body.decode() or "null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(f"malformed JSON request body: {exc}") from None


def _flag(params: dict[str, str], name: str) -> bool:
    return params.get(name, "").lower() in ("on", "true", "1")


# ---------------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by default
        if self.server.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        with self.server.state.lock:
            self.server.state.status_counts[status] = self.server.state.status_counts.get(status, 0) + 1
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self, method: str) -> None:
        state = self.server.state
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > state.max_body_bytes:
            self.close_connection = True  # the body is not read: the connection cannot be reused
            if length < 0:
                self._reply(400, b"bad Content-Length header", "text/plain")
            else:
                self._reply(413, f"request body of {length} bytes is over this server's limit of "
                                 f"{state.max_body_bytes} bytes".encode(), "text/plain")
            return
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        parts = [unquote(p) for p in url.path.split("/") if p]
        state.log.append((method, url.path, params))
        faults = state.faults
        if parts[:1] == ["api"] and (faults.delay or faults.error_rate or faults.drop_rate or faults.stall_rate):
            if faults.delay:
                time.sleep(faults.delay)
            with state.lock:
                draw = faults.rng.random()
            if draw < faults.drop_rate:
                self.close_connection = True  # no reply at all: the client sees a dropped connection
                return
            if draw < faults.drop_rate + faults.error_rate:
                self._reply(503, b"DVID server is unavailable (injected fault)", "text/plain")
                return
            if draw < faults.drop_rate + faults.error_rate + faults.stall_rate:
                with state.lock:
                    faults.stalled += 1
                time.sleep(faults.stall)
        try:
            if parts[:1] != ["api"]:
                raise DvidHTTPError(404, f"Could not find the URL: {url.path}")
            status, payload, ctype = self._route(method, parts[1:], params, body)
        except DvidHTTPError as exc:
            status, payload, ctype = exc.status, exc.message.encode(), "text/plain"
        except Exception as exc:  # a bug in this server: say so instead of hanging the client
            status, payload, ctype = 500, f"test server error: {type(exc).__name__}: {exc}".encode(), "text/plain"
        if isinstance(payload, (dict, list)):
            payload, ctype = json.dumps(payload).encode(), "application/json"
        self._reply(status, payload, ctype)

    # ---------------------------------------------------------------- routing

    def _route(self, method: str, parts: list[str], params: dict[str, str], body: bytes) -> tuple[int, Any, str]:
        state = self.server.state
        unmatched = DvidHTTPError(404, f"Could not find the URL: /api/{'/'.join(parts)}")
        if parts == ["repos"] and method == "POST":
            spec = _json(body) or {}
            return 200, {"root": state.new_repo(spec.get("alias", ""), spec.get("description", ""))}, ""
        if parts == ["repos", "info"] and method == "GET":
            with state.lock:
                return 200, {root: state.repo_info(root) for root in state.repos}, ""
        if parts[:1] == ["server"]:
            if parts[1:] == ["info"] and method == "GET":
                return 200, {"Server": "labelstitch DVID test server", "Max Throttled Ops": state.max_throttled_ops}, ""
            if parts[1:] == ["settings"] and method == "POST":
                spec = _json(body) or {}
                if "throttle" in spec:
                    state.max_throttled_ops = int(spec["throttle"])
                return 200, {"result": "settings changed"}, ""
            raise unmatched
        if parts[:1] == ["repo"] and len(parts) >= 2:
            node = state.node(parts[1])
            if len(parts) == 2 and method == "HEAD":
                return 200, b"", "text/plain"
            if parts[2:] == ["info"] and method == "GET":
                with state.lock:
                    return 200, state.repo_info(node.root), ""
            if parts[2:] == ["instance"] and method == "POST":
                spec = _json(body)
                if not isinstance(spec, dict):
                    raise _bad("instance creation needs a JSON object body")
                return 200, {"result": state.add_instance(node, spec)}, ""
            raise unmatched
        if parts[:1] != ["node"] or len(parts) < 3:
            raise unmatched
        node = state.node(parts[1])
        if len(parts) == 3:
            return self._node_call(method, node, parts[2], body, unmatched)
        inst = state.instance(node, parts[2])
        if method in ("POST", "DELETE") and node.locked and not (inst.typename == "roi" and parts[3:] == ["ptquery"]):
            raise _bad(f"Cannot do {method} on locked node {node.uuid}")
        if parts[3:] == ["info"] and method == "GET":
            with state.lock:
                return 200, state.info(inst, node), ""
        if parts[3:] == ["sync"] and method == "POST":
            spec = _json(body) or {}
            names = [n for n in str(spec.get("sync", "")).split(",") if n]
            for name in names:
                state.instance(node, name)
            inst.syncs = names if params.get("replace") == "true" else inst.syncs + [n for n in names if n not in inst.syncs]
            return 200, b"", "text/plain"
        throttled = _flag(params, "throttle")
        if throttled:
            with state.throttle_lock:
                if state.faults.force_503 > 0:
                    state.faults.force_503 -= 1
                    raise DvidHTTPError(503, "Server is throttled (forced by the test hook)")
                if state.active_throttled >= state.max_throttled_ops:
                    raise DvidHTTPError(
                        503,
                        f"Server already running {state.active_throttled} throttled operations "
                        f"(max = {state.max_throttled_ops})",
                    )
                state.active_throttled += 1
        try:
            if inst.typename in BLOCK_TYPES:
                return self._voxels(method, node, inst, parts[3:], params, body, unmatched)
            if inst.typename == "roi":
                return self._roi(method, node, inst, parts[3:], params, body, unmatched)
            if inst.typename == "keyvalue":
                return self._keyvalue(method, node, inst, parts[3:], body, unmatched)
            raise unmatched
        finally:
            if throttled:
                with state.throttle_lock:
                    state.active_throttled -= 1

    def _node_call(self, method: str, node: _Node, call: str, body: bytes, unmatched: DvidHTTPError) -> tuple[int, Any, str]:
        state = self.server.state
        if call in ("commit", "status") and method == "GET":
            return 200, {"Locked": node.locked}, ""
        if call == "commit" and method == "POST":
            with state.lock:
                if node.locked:
                    raise _bad(f"node {node.uuid} has already been committed")
                node.locked = True
            return 200, {"committed": node.uuid}, ""
        if call in ("newversion", "branch") and method == "POST":
            spec = _json(body) or {}
            branch = None
            if call == "branch":
                branch = str(spec.get("branch", ""))
            return 200, {"child": state.child(node, str(spec.get("note", "")), branch)}, ""
        raise unmatched

    def _voxels(
        self, method: str, node: _Node, inst: _Instance, rest: list[str], params: dict[str, str], body: bytes,
        unmatched: DvidHTTPError,
    ) -> tuple[int, Any, str]:
        state = self.server.state
        labels = inst.typename in LABEL_TYPES
        if inst.labelmap is not None and rest and rest[0] not in ("raw", "isotropic", "info"):
            try:
                with state.lock:
                    return self._labelmap(method, node, inst, rest, params, body, unmatched)
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

    def _labelmap(
        self, method: str, node: _Node, inst: _Instance, rest: list[str], params: dict[str, str], body: bytes,
        unmatched: DvidHTTPError,
    ) -> tuple[int, Any, str]:
        """The labelmap endpoints of ``dvid-labelmap.md`` (called under the state's lock)."""
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

    def _roi(
        self, method: str, node: _Node, inst: _Instance, rest: list[str], params: dict[str, str], body: bytes,
        unmatched: DvidHTTPError,
    ) -> tuple[int, Any, str]:
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

    def _keyvalue(
        self, method: str, node: _Node, inst: _Instance, rest: list[str], body: bytes, unmatched: DvidHTTPError
    ) -> tuple[int, Any, str]:
        state = self.server.state
        with state.lock:
            visible: dict[str, bytes] = {}
            for version in reversed(state.versions(inst, node)):  # oldest first, nearer versions win
                for key, value in inst.keys.get(version, {}).items():
                    if value is None:
                        visible.pop(key, None)
                    else:
                        visible[key] = value
            if rest == ["keys"] and method == "GET":
                return 200, sorted(visible), ""
            if len(rest) == 3 and rest[0] == "keyrange" and method == "GET":
                return 200, sorted(k for k in visible if rest[1] <= k <= rest[2]), ""
            if len(rest) != 2 or rest[0] != "key":
                raise unmatched
            key = rest[1]
            if method in ("GET", "HEAD"):
                if key not in visible:
                    raise DvidHTTPError(404, f"key {key!r} not found")
                return 200, visible[key], "application/octet-stream"
            stored = inst.keys.setdefault(state.write_node(inst, node), {})
            if method == "POST":
                stored[key] = bytes(body)
            elif method == "DELETE":
                stored[key] = None  # a tombstone hides the ancestors' value
            return 200, b"", "text/plain"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: DvidState, verbose: bool) -> None:
        self.state = state
        self.verbose = verbose
        self.connections: set[socket.socket] = set()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        self.connections.add(conn)
        return conn, addr

    def shutdown_request(self, request: Any) -> None:
        self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Cut every open (keep-alive) connection, as a server that goes down does."""
        for conn in list(self.connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class DvidTestServer:
    """The server on ``host:port`` (port 0: a free one) in a background thread.

    ``stop()`` and ``start()`` again keep the data and the port, so a test can take the
    server down and bring it back. ``state.faults`` sets injected faults.
    """

    def __init__(self, port: int = 0, *, host: str = "127.0.0.1", state: DvidState | None = None, verbose: bool = False):
        self.host = host
        self.port = port
        self.state = state or DvidState()
        self.verbose = verbose
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """``HOST:PORT``, as DVID configs write it."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}/api"

    @property
    def faults(self) -> Faults:
        return self.state.faults

    def start(self) -> DvidTestServer:
        self._httpd = _Server((self.host, self.port), self.state, self.verbose)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd.drop_connections()
            assert self._thread is not None
            self._thread.join()
            self._httpd = None

    def new_repo(self, alias: str = "") -> str:
        """A new repo's root UUID (what ``POST /api/repos`` returns)."""
        return self.state.new_repo(alias)

    def __enter__(self) -> DvidTestServer:
        return self.start() if self._httpd is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _load_grayscale(spec: str) -> np.ndarray:
    """``FILE.npy`` or ``FILE.npz[:KEY]`` (default key ``raw``) as a uint8 (Z, Y, X) array."""
    path, key = spec, ""
    if spec.rsplit(":", 1)[0].endswith(".npz") and ":" in spec:
        path, key = spec.rsplit(":", 1)
    data = np.load(path)
    if isinstance(data, np.lib.npyio.NpzFile):
        names = list(data.keys())
        key = key or ("raw" if "raw" in names else names[0])
        if key not in names:
            raise SystemExit(f"{path} has no array {key!r}; it has {', '.join(names)}")
        data = data[key]
    if data.ndim != 3 or data.dtype != np.uint8:
        raise SystemExit(f"{spec}: grayscale must be a 3-D uint8 array, got {data.ndim}-D {data.dtype}")
    return data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m labelstitch.testing.dvid", description="Serve the labelstitch DVID test server (in memory)."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--repo", action="store_true", help="create one repo at start and print its UUID")
    parser.add_argument(
        "--grayscale",
        metavar="FILE[:KEY]",
        help="create a repo holding this uint8 volume (.npy, or .npz with KEY, default raw) as the uint8blk "
        "instance 'grayscale', zero-padded to whole 32-voxel blocks, and print a config to segment it",
    )
    parser.add_argument("--throttle", type=int, default=1, help="max concurrent throttled requests (DVID's default: 1)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    gray = _load_grayscale(args.grayscale) if args.grayscale else None
    server = DvidTestServer(args.port, host=args.host, state=DvidState(max_throttled_ops=args.throttle), verbose=args.verbose)
    server.start()
    print(f"DVID test server on http://{server.address}/api (Ctrl-C to stop)", flush=True)
    if args.repo or gray is not None:
        root = server.new_repo("labelstitch")
        print(f"repo root UUID: {root}", flush=True)
    if gray is not None:
        state = server.state
        node = state.node(root)
        state.add_instance(node, {"typename": "uint8blk", "dataname": "grayscale"})
        padded = np.zeros(tuple(-(-n // 32) * 32 for n in gray.shape), np.uint8)
        padded[tuple(slice(0, n) for n in gray.shape)] = gray
        state.write(state.instance(node, "grayscale"), node, (0, 0, 0), padded)
        config = {
            "dvid-info": {"dvid-server": server.address, "uuid": root[:8], "segmentation-name": "segmentation",
                          "grayscale": "grayscale"},
            "options": {"chunk-size": 64, "overlap": 8},
        }
        print(f"grayscale {gray.shape} stored as {padded.shape}; segment it with this config "
              f"(labelstitch run CONFIG --create-output):\n{json.dumps(config)}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
