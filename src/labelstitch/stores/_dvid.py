"""DVID volumes: ``dvid://HOST:PORT/UUID/INSTANCE[?roi=NAME]`` over DVID's REST API.

Grayscale (``uint8blk``) and labels (``labelblk``, ``labelarray``, ``labelmap``) are read
at any box; labels travel as raw LZ4 blocks (``compression=lz4``), as libdvid and
DVIDSparkServices send them. Writes must cover whole DVID blocks (32 voxels unless the
instance says otherwise); a box ending at the volume's far edge is padded with zeros up to
the block. ``?roi=NAME`` makes reads return 0 outside that DVID ROI and writes skip the
blocks outside it. The HTTP calls, their retries and the address form are in
:mod:`labelstitch.stores._dvid_client`; everything that reads or changes a DVID volume
string (``?supervoxels=``, ``?write=``, sibling instances for ROIs and metadata, the seed
paper's ``dvid-info`` section) is here.

DVID has no staging: writes land at once (``commit()`` and ``discard()`` do nothing). A
crashed run leaves whole blocks of either the old or the new labels, and ``--resume``
rewrites them from the checkpoints. labelstitch's own metadata (shape, config, plan,
stitch summary) is kept in a ``keyvalue`` instance named ``labelstitch``, key = instance.

A ``labelmap`` output keeps *supervoxels* (``?write=supervoxels``, its default): the
voxels are supervoxel ids posted as compressed blocks without indexing, the bodies are a
label index per body and a supervoxel → body mapping (``shared/docs/dvid-labelmap.md``
section 10), and the lower scales are posted too;
:class:`~labelstitch.stores._dvid_labelmap.LabelmapWriter` does that from the workers. ``?write=bodies`` (and every labelblk or labelarray output) writes body ids
through ``/raw``. Reading a labelmap gives bodies, or supervoxels with ``?supervoxels=true``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from ..geometry import Box, Plan
from ..pyramid import downsample_labels, level_shapes
from ._base import Capabilities, StoreError, VolumeRef, VolumeStore
from ._dvid_client import DvidAddress, DvidError, dvid_request, instance_info, node_locked, zyx
from ._dvid_labelmap import LabelmapWriter, aligned_box

__all__ = ["DvidStore", "aligned_box", "volumes_from_info"]

LABEL_TYPES = ("labelblk", "labelarray", "labelmap")
VOLUME_TYPES = ("uint8blk",) + LABEL_TYPES
META_INSTANCE = "labelstitch"


def _ref(address: DvidAddress) -> VolumeRef:
    return VolumeRef(DvidStore, address.uri, None, address.name, address)


def volumes_from_info(info: dict[str, Any], roi: str | None) -> dict[str, str | None]:
    """The volume strings of the seed paper's ``dvid-info`` section: ``input`` (its grayscale),
    ``output`` (its segmentation, with the type and block size of a created one, and the ROI
    its writes keep to) and ``roi`` (``roi``, a name on the node or a full string, as a
    full string)."""
    server = info["dvid-server"].removeprefix("http://").rstrip("/")
    node = f"dvid://{server}/{info['uuid']}"
    roi = roi or info.get("roi")
    named = roi if roi and "://" not in roi else None
    query = {
        "roi": named,  # writes skip the blocks outside the ROI
        "type": info.get("segmentation-type"),
        "blocksize": info.get("segmentation-block-size"),
    }
    tail = "&".join(f"{k}={v}" for k, v in query.items() if v is not None)
    return {
        "input": f"{node}/{info['grayscale']}",
        "output": f"{node}/{info['segmentation-name']}" + (f"?{tail}" if tail else ""),
        "roi": f"{node}/{named}" if named else roi,
    }


class DvidStore(VolumeStore):
    """A DVID ``uint8blk`` or labels instance, seen as a (Z, Y, X) volume.

    Any box can be read (DVID answers 0 where nothing was written), so the volume is
    unbounded for reads; ``shape`` is the extent labelstitch wrote (kept in its metadata)
    or DVID's ``MaxPoint + 1``.
    """

    scheme = "dvid"
    supports_parallel_writes = True
    bounded = False

    def __init__(self, ref: VolumeRef, info: dict[str, Any], shape: tuple[int, ...], *, read_only: bool) -> None:
        typename = info["Base"]["TypeName"]
        super().__init__(ref, shape, np.uint8 if typename == "uint8blk" else np.uint64, read_only=read_only)
        self.address: DvidAddress = ref.detail
        self.typename = typename
        self.block_size = zyx(info["Extended"]["BlockSize"])
        #: the scales above 0 this instance keeps (labelmap's MaxDownresLevel)
        self.max_level = int(info["Extended"].get("MaxDownresLevel") or 0) if typename == "labelmap" else 0
        #: whether writes are supervoxels plus a mapping (a labelmap, unless ``?write=bodies``)
        self.supervoxel_mode = typename == "labelmap" and self.address.options.get("write") != "bodies"

    # ------------------------------------------------------------------ volume strings

    @classmethod
    def parse(cls, text: str, base: Path) -> VolumeRef:
        """``inner`` is the instance, ``detail`` the :class:`DvidAddress`; ``text`` is the
        address with its options in name order."""
        return _ref(DvidAddress.parse(text))

    @classmethod
    def with_write_mode(cls, ref: VolumeRef, mode: str) -> VolumeRef:
        """``?write=MODE`` unless the volume string chose already."""
        address: DvidAddress = ref.detail
        return ref if "write" in address.options else _ref(address.with_options(write=mode))

    @classmethod
    def supervoxel_view(cls, ref: VolumeRef) -> VolumeRef | None:
        """``?supervoxels=true`` (``ref`` itself if it says so) of a labelmap that keeps supervoxels."""
        if ref.detail.options.get("supervoxels") == "true":
            return ref
        return _ref(ref.detail.with_options(supervoxels="true")) if cls.keeps_supervoxels(ref) else None

    @classmethod
    def roi_sibling(cls, ref: VolumeRef, name: str) -> VolumeRef:
        """The roi instance ``name`` on ``ref``'s node."""
        return _ref(ref.detail.sibling(name))

    @classmethod
    def roi_runs(cls, ref: VolumeRef) -> tuple[NDArray[np.int64], int]:
        """The ``[z, y, x0, x1]`` block runs (x1 inclusive) of the roi instance ``ref`` and its block size."""
        address: DvidAddress = ref.detail
        info = instance_info(address)
        if info is None:
            raise StoreError(f"no ROI {address.name!r} at node {address.uuid} of {address.server}")
        if info["Base"]["TypeName"] != "roi":
            raise StoreError(f"{ref} is a {info['Base']['TypeName']} instance, not a roi")
        block = info["Extended"].get("BlockSize", [32, 32, 32])
        if len(set(block)) != 1:
            raise StoreError(f"ROI {ref} has non-cubic blocks {block}; labelstitch reads cubic ROI blocks only")
        runs = np.asarray(dvid_request(address.server, "GET", f"{address.node_path}/roi").json(), dtype=np.int64)
        return runs.reshape(-1, 4), int(block[0])

    # ------------------------------------------------------------------ identity

    @classmethod
    def open(cls, ref: VolumeRef, *, read_only: bool = True) -> DvidStore:
        address: DvidAddress = ref.detail
        info = instance_info(address)
        if info is None:
            raise StoreError(f"no instance {address.name!r} at node {address.uuid} of DVID server {address.server}")
        typename = info["Base"]["TypeName"]
        if typename not in VOLUME_TYPES:
            raise StoreError(f"{ref} is a {typename} instance; labelstitch reads {', '.join(VOLUME_TYPES)} volumes")
        shape = _stored_metadata(address).get("shape")
        if shape is None:
            top = info["Extended"].get("MaxPoint")
            if not top:
                raise StoreError(f"{ref} holds no data yet (DVID reports no extents), so it has no shape to read")
            shape = [v + 1 for v in zyx(top)]
        return cls(ref, info, tuple(shape), read_only=read_only)

    @classmethod
    def exists(cls, ref: VolumeRef) -> bool:
        """Whether the instance exists and something was written to it."""
        return _has_data(instance_info(ref.detail))

    @classmethod
    def capabilities_of(cls, ref: VolumeRef) -> Capabilities:
        return Capabilities(parallel_writes=True, bounded=False, local=False)

    @classmethod
    def check_output(cls, ref: VolumeRef, *, overwrite: bool = False, create_instance: bool = False) -> tuple[int, int, int]:
        """Refuse a committed node, a missing instance without ``create_instance``, a
        non-labels instance or one holding labels without ``overwrite``; return the block
        shape every write must align to."""
        return dvid_alignment(ref, check_dvid_output(ref, overwrite=overwrite, create_instance=create_instance))

    @classmethod
    def short_name(cls, ref: VolumeRef) -> str:
        return str(ref.detail.name)

    @classmethod
    def keeps_supervoxels(cls, ref: VolumeRef) -> bool:
        """A labelmap output (existing, or to be created, the default type) keeps supervoxels
        unless ``?write=bodies``; asking it of a labelblk or labelarray is refused."""
        address: DvidAddress = ref.detail
        mode = address.options.get("write")
        info = instance_info(address)
        typename = info["Base"]["TypeName"] if info is not None else address.options.get("type", "labelmap")
        if typename == "labelmap":
            return mode != "bodies"
        if mode == "supervoxels":
            raise StoreError(
                f"{ref} is a {typename} instance, which has no supervoxel mapping; only a labelmap keeps supervoxels: "
                "write to a labelmap, or write bodies (options.dvid-write: bodies)"
            )
        return False

    @classmethod
    def footprint(cls, ref: VolumeRef) -> tuple[str, ...]:
        """Server, instance and node: a child node's writes do not touch its parent's data."""
        address: DvidAddress = ref.detail
        return ("dvid", address.server, address.name, address.uuid)

    @staticmethod
    def footprints_overlap(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
        """One instance on one server, at one node: a unique prefix of a UUID names the node as well."""
        return a[1:3] == b[1:3] and (a[3].startswith(b[3]) or b[3].startswith(a[3]))

    @classmethod
    def _create(
        cls, ref: VolumeRef, shape: tuple[int, ...], dtype: DTypeLike, *, chunks: tuple[int, ...] | None, staged: bool
    ) -> DvidStore:
        """Create the instance if :meth:`check_output` allowed it to be missing. DVID has no
        staging, so ``staged`` is ignored and writes land in place (whole blocks, each
        wholly old or new); ``chunks`` is ignored: blocks are the instance's (``?blocksize=``)."""
        address: DvidAddress = ref.detail
        info = instance_info(address)
        if info is None:
            options = address.options
            typename = options.get("type", "labelmap")
            size = options.get("blocksize", "32")
            spec = {"typename": typename, "dataname": address.name, "BlockSize": f"{size},{size},{size}"}
            if typename == "labelmap":  # scales down to one block, unless the volume string says otherwise
                levels = options.get("maxdownreslevel", str(len(level_shapes(shape, (int(size),) * 3)) - 1))
                spec.update({"IndexedLabels": "true", "MaxDownresLevel": levels})
            try:
                dvid_request(address.server, "POST", f"repo/{address.uuid}/instance", json_body=spec)
            except DvidError as exc:  # a retried POST whose first reply was lost
                if "already exists" not in str(exc):
                    raise
            info = instance_info(address)
            assert info is not None
            existed = False
        else:
            existed = True
        if not np.issubdtype(np.dtype(dtype), np.integer):
            raise StoreError(f"DVID label volumes hold integer labels; cannot write {np.dtype(dtype)} into {ref}")
        store = cls(_ref(address.with_options(mutate="true" if existed else None)), info, tuple(shape), read_only=False)
        store.set_metadata({})
        return store

    # ------------------------------------------------------------------ voxels

    def _check_box(self, box: Box) -> None:
        if box.ndim != 3 or box.empty:
            raise StoreError(f"box {box} is not a non-empty 3-D box (reading {self.uri})")

    def _raw_path(self, box: Box) -> str:
        size = "_".join(str(n) for n in box.shape[::-1])
        offset = "_".join(str(s) for s in box.start[::-1])
        return f"{self.address.node_path}/raw/0_1_2/{size}/{offset}"

    def _params(self, **extra: str) -> dict[str, str]:
        options = self.address.options
        params = {k: options[k] for k in ("roi",) if k in options}
        return {**params, **extra}

    def _read(self, box: Box) -> NDArray[Any]:
        extra = {"supervoxels": "true"} if self.typename == "labelmap" and self.address.options.get("supervoxels") == "true" else {}
        return self._read_raw(box, **extra)

    def _read_raw(self, box: Box, *, roi: bool = True, **extra: str) -> NDArray[Any]:
        """``GET raw`` of ``box`` (labels as one LZ4 block), with extra query parameters
        (``supervoxels``, ``scale``: then ``box`` is in that scale's voxels); ``roi`` adds
        the volume string's ``roi=`` (in scale-0 blocks, so not for a lower scale)."""
        labels = self.typename in LABEL_TYPES
        params = {**(self._params() if roi else {}), **({"compression": "lz4"} if labels else {}), **extra}
        reply = dvid_request(self.address.server, "GET", self._raw_path(box), params=params, throttle=True)
        expected = box.size * self.dtype.itemsize
        payload = reply.content
        if labels:
            import lz4.block

            try:
                payload = lz4.block.decompress(payload, uncompressed_size=expected)
            except Exception as exc:
                raise DvidError(f"cannot decompress the LZ4 labels of {self.uri} at {box}: {exc}", url=reply.url) from None
        if len(payload) != expected:
            raise DvidError(f"{self.uri} sent {len(payload)} bytes for box {box}; expected {expected}", url=reply.url)
        return np.frombuffer(payload, dtype=self.dtype.newbyteorder("<")).reshape(box.shape).astype(self.dtype)

    def aligned(self, box: Box) -> Box:
        """The box DVID will take for a write of ``box`` (see :func:`aligned_box`)."""
        return aligned_box(box, self.block_size, self.shape, self.uri)

    def _write(self, box: Box, data: NDArray[Any]) -> None:
        padded = self.aligned(box)
        if padded != box:
            full = np.zeros(padded.shape, self.dtype)
            full[tuple(slice(0, n) for n in box.shape)] = data
            data = full
        raw = np.ascontiguousarray(data, dtype=self.dtype.newbyteorder("<")).tobytes()
        params = self._params()
        if self.typename in LABEL_TYPES:
            import lz4.block

            raw = lz4.block.compress(raw, store_size=False)
            params["compression"] = "lz4"
            if self.address.options.get("mutate") == "true":
                params["mutate"] = "true"
        dvid_request(self.address.server, "POST", self._raw_path(padded), params=params, data=raw, throttle=True)

    # ------------------------------------------------------------------ supervoxels and bodies (labelmap)

    def supervoxel_writer(self) -> LabelmapWriter:
        """The writer of a labelmap output written as supervoxels (picklable: workers use it)."""
        self._check_writable()
        if not self.supervoxel_mode:
            raise StoreError(f"{self.uri} is written as bodies (write=bodies or not a labelmap), not as supervoxels")
        return LabelmapWriter(self.uri, self.address, self.block_size, self.shape)

    def build_pyramid(self, mapper: Any) -> int:
        """Post scales 1..MaxDownresLevel of a labelmap written as supervoxels, scale by scale,
        each voxel the most frequent non-zero supervoxel of its 2x2x2 cell (DVID's rule), one
        box of 4³ blocks per item through ``mapper(fn, items)`` so that workers build it.
        (Bodies written through ``/raw`` are downsampled by DVID itself.)"""
        self._check_writable()
        if not self.supervoxel_mode or not self.max_level:
            return 1 + self.max_level
        box = tuple(4 * b for b in self.block_size)
        for scale in range(1, self.max_level + 1):
            shape = tuple(-(-n // 2**scale) for n in self.shape)
            items = [(self.ref, scale, (sv.interior.start, sv.interior.stop)) for sv in Plan.grid(shape, box, 0)]
            for _ in mapper(_downres_box, items):
                pass
        return 1 + self.max_level

    # ------------------------------------------------------------------ the rest

    @property
    def writer(self) -> VolumeRef:
        return self.ref

    @property
    def chunks(self) -> tuple[int, ...]:
        return self.block_size

    @property
    def metadata(self) -> dict[str, Any]:
        return _stored_metadata(self.address)

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        """Keep ``metadata`` (plus the volume's shape) in the ``labelstitch`` keyvalue instance."""
        self._check_writable()
        kv = self.address.sibling(META_INSTANCE)
        if instance_info(kv) is None:
            try:
                spec = {"typename": "keyvalue", "dataname": META_INSTANCE}
                dvid_request(self.address.server, "POST", f"repo/{self.address.uuid}/instance", json_body=spec)
            except DvidError as exc:
                if "already exists" not in str(exc):
                    raise
        body = json.dumps({**metadata, "shape": list(self.shape)}).encode()
        dvid_request(self.address.server, "POST", f"{kv.node_path}/key/{self.address.name}", data=body)

    # commit() and discard() are the base class's no-ops: DVID writes are visible at once,
    # and there is no staging to drop (a rerun or ``--resume`` rewrites the blocks)


def _downres_box(item: tuple[VolumeRef, int, tuple[tuple[int, ...], tuple[int, ...]]]) -> None:
    """One box of one scale: read the scale below (supervoxels), halve it, post its blocks."""
    ref, scale, (start, stop) = item
    store = DvidStore.open(ref, read_only=False)
    stop = tuple(-(-e // b) * b for e, b in zip(stop, store.block_size))  # whole blocks: DVID reads 0 beyond the data
    below = store._read_raw(Box(tuple(2 * s for s in start), tuple(2 * e for e in stop)), roi=False,
                            supervoxels="true", scale=str(scale - 1))
    store.supervoxel_writer().write_blocks(start, downsample_labels(below), scale)


def _stored_metadata(address: DvidAddress) -> dict[str, Any]:
    kv = address.sibling(META_INSTANCE)
    try:
        reply = dvid_request(address.server, "GET", f"{kv.node_path}/key/{address.name}")
    except DvidError as exc:
        if exc.status in (400, 404):  # no keyvalue instance, or no key for this volume
            return {}
        raise
    try:
        value = json.loads(reply.content)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _has_data(info: dict[str, Any] | None) -> bool:
    """Whether DVID reports extents for the instance (something was written)."""
    return bool(info and info.get("Extended", {}).get("MaxPoint"))


def check_dvid_output(ref: VolumeRef, *, overwrite: bool, create_instance: bool) -> dict[str, Any] | None:
    """Every check of a DVID output before work starts; returns its ``info`` (None: to be
    created).

    Raises
    ------
    StoreError
        The node is committed (DVID refuses writes to locked nodes), the instance is
        missing and ``create_instance`` is off, it is not a labels instance, or it holds
        data and ``overwrite`` is off.
    """
    address: DvidAddress = ref.detail
    info = instance_info(address)
    if node_locked(address):
        raise StoreError(
            f"DVID node {address.uuid} is committed (locked), and DVID refuses every write to it "
            f"(\"Cannot do POST on locked node\"); write to a child version instead: "
            f"POST /api/node/{address.uuid}/newversion"
        )
    if info is None:
        if not create_instance:
            kind = address.options.get("type", "labelmap")
            raise StoreError(
                f"no instance {address.name!r} at node {address.uuid} of {address.server}; pass --create-output "
                f"(create_output=True) to create it as a {kind} with {address.options.get('blocksize', '32')}³ blocks"
            )
        if address.options.get("type", "labelmap") not in LABEL_TYPES:
            raise StoreError(f"{ref}: type must be one of {', '.join(LABEL_TYPES)}")
        return None
    typename = info["Base"]["TypeName"]
    if typename not in LABEL_TYPES:
        raise StoreError(f"output {ref} is a {typename} instance; segmentations go to {', '.join(LABEL_TYPES)}")
    if _has_data(info) and not overwrite:
        raise StoreError(f"output {ref} holds labels already; pass overwrite=True (--overwrite) to write over them")
    if _has_data(info) and DvidStore.keeps_supervoxels(ref) and _stored_metadata(address).get("complete") is not False:
        # only a run's own unfinished output may be written again: it gets the same ids
        raise StoreError(
            f"output {ref} is a labelmap holding labels already, and DVID cannot list its bodies' label indices, so "
            "writing supervoxels over it would leave stale bodies behind; write to a new instance, or write bodies "
            "(options.dvid-write: bodies)"
        )
    return info


def dvid_alignment(ref: VolumeRef, info: dict[str, Any] | None) -> tuple[int, int, int]:
    """The block size writes to ``ref`` must align to: the instance's (``info``), or the one
    it would be created with (``info`` None)."""
    if info is None:
        size = int(ref.detail.options.get("blocksize", "32"))
        return size, size, size
    return zyx(info["Extended"]["BlockSize"])
