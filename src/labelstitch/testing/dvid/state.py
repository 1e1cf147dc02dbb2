"""The test server's state model: repos, their version DAG, instances and their data (no HTTP)."""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
import uuid as uuidlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import _labelmap as lm

__all__ = ["DvidHTTPError", "DvidState", "Faults"]

LABEL_TYPES = ("labelblk", "labelarray", "labelmap")
BLOCK_TYPES = ("uint8blk",) + LABEL_TYPES
KNOWN_TYPES = BLOCK_TYPES + ("roi", "keyvalue", "labelvol", "tarsupervoxels")
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
    extension: str | None = None  # the files' extension (tarsupervoxels only)


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
            extension = None
            if typename == "tarsupervoxels":
                extension = str(spec.get("extension", "")).lstrip(".")
                if not extension:
                    raise _bad("tarsupervoxels instances must have Extension set in the configuration")
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
                extension=extension,
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
        if inst.typename == "tarsupervoxels":
            return {"Base": base, "Extended": {"Extension": inst.extension}}
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


@dataclass(frozen=True)
class InstanceCall:
    """One request to an instance, ``/api/node/UUID/NAME/<rest>``, as the handler of its
    instance type receives it."""

    method: str
    node: _Node
    inst: _Instance
    rest: list[str]
    params: dict[str, str]
    body: bytes
    unmatched: DvidHTTPError

    def parts(self) -> tuple[str, _Node, _Instance, list[str], dict[str, str], bytes, DvidHTTPError]:
        return self.method, self.node, self.inst, self.rest, self.params, self.body, self.unmatched


class Calls:
    """What the calls of one instance type (a mixin of the request handler) rely on."""

    server: Any
