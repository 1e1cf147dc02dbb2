"""Where a DVID volume's meshes and skeletons go in DVID, for FlyEM's tools to find them.

- A body's mesh: the keyvalue instance ``NAME_meshes``, key ``ID.ngmesh`` (Neuroglancer's
  legacy mesh format; the key NeuTu, neuclease and natverse's malevnc fetch).
- A body's skeleton: the keyvalue instance ``NAME_skeletons``, key ``ID_swc`` (SWC text,
  NeuTu's key).
- A supervoxel's mesh (the volume ``NAME?supervoxels=true`` of a labelmap): the
  ``tarsupervoxels`` instance ``NAME_sv_meshes``, extension ``drc``, synced to ``NAME``, one
  Draco file per supervoxel, posted in tars (``POST load``); DVID then serves a body's
  supervoxel meshes as one tar (``tarfile/BODY``), where NeuTu and neuclease look for them.

Instances are created when missing; every call goes through the volume's retrying client.
"""

from __future__ import annotations

import io
import tarfile
from contextlib import contextmanager
from typing import Iterator

from ..meshing import Mesh
from ._base import StoreError
from ._dvid_client import DvidAddress, DvidError, dvid_request, instance_info
from ._shape_formats import encode_draco, encode_legacy_mesh

__all__ = ["DvidShapes"]

#: supervoxel files per ``POST load`` (a few MB)
_PER_TAR = 512


class DvidShapes:
    """The DVID side of one volume's shapes (picklable: a batch in progress is not sent)."""

    def __init__(self, volume: str) -> None:
        self.volume = volume  # the dvid:// string of the segmentation
        self._batch: list[tuple[int, bytes | None]] | None = None

    def __getstate__(self) -> dict[str, object]:
        return {"volume": self.volume, "_batch": None}

    @property
    def supervoxels(self) -> bool:
        """Whether these are the shapes of a labelmap's supervoxels (``?supervoxels=true``)."""
        return DvidAddress.parse(self.volume).options.get("supervoxels") == "true"

    def instance(self, kind: str) -> DvidAddress | None:
        """The instance that holds ``kind`` (None: supervoxels' skeletons go nowhere)."""
        address = DvidAddress.parse(self.volume)
        if self.supervoxels:
            return address.sibling(f"{address.name}_sv_meshes") if kind == "mesh" else None
        return address.sibling(f"{address.name}_{'meshes' if kind == 'mesh' else 'skeletons'}")

    def _path(self, kv: DvidAddress, kind: str, body: int) -> str:
        if self.supervoxels:
            return f"{kv.node_path}/supervoxel/{body}"
        return f"{kv.node_path}/key/{body}.ngmesh" if kind == "mesh" else f"{kv.node_path}/key/{body}_swc"

    def mesh_bytes(self, mesh: Mesh) -> bytes:
        """A mesh as DVID keeps it: a supervoxel's as Draco, a body's in the legacy format."""
        return encode_draco(mesh) if self.supervoxels else encode_legacy_mesh(mesh)

    def create(self, kind: str) -> None:
        """Create the instance of ``kind`` if it is missing (a tarsupervoxels one synced to
        the labelmap, as DVID needs to find a body's supervoxels)."""
        kv = self.instance(kind)
        if kv is None or instance_info(kv) is not None:
            return
        spec = {"typename": "keyvalue", "dataname": kv.name}
        if self.supervoxels:
            spec = {"typename": "tarsupervoxels", "dataname": kv.name, "Extension": "drc"}
        try:
            dvid_request(kv.server, "POST", f"repo/{kv.uuid}/instance", json_body=spec)
        except DvidError as exc:
            if "already exists" not in str(exc):
                raise
        if self.supervoxels:
            dvid_request(kv.server, "POST", f"{kv.node_path}/sync", json_body={"sync": DvidAddress.parse(self.volume).name})

    def post(self, kind: str, body: int, data: bytes | None) -> None:
        """Post (or, with None, delete) a body's or supervoxel's shape; inside :meth:`batched`,
        supervoxel meshes wait for the end of the batch."""
        kv = self.instance(kind)
        if kv is None:
            return
        if self._batch is not None:
            self._batch.append((body, data))
            return
        if data is not None:
            dvid_request(kv.server, "POST", self._path(kv, kind, body), data=data)
            return
        try:
            dvid_request(kv.server, "DELETE", self._path(kv, kind, body))
        except DvidError as exc:
            if exc.status != 404:
                raise

    @contextmanager
    def batched(self) -> Iterator[None]:
        """Supervoxel meshes posted inside go as tars when it ends (one request per
        :data:`_PER_TAR` files instead of one each); deletions after them."""
        if not self.supervoxels:
            yield
            return
        self._batch = []
        try:
            yield
            pending, self._batch = self._batch, None
            kv = self.instance("mesh")
            assert kv is not None
            posts = [(sv, data) for sv, data in pending if data is not None]
            for k in range(0, len(posts), _PER_TAR):
                buffer = io.BytesIO()
                with tarfile.open(fileobj=buffer, mode="w") as tar:
                    for sv, data in posts[k:k + _PER_TAR]:
                        member = tarfile.TarInfo(f"{sv}.drc")
                        member.size = len(data)  # type: ignore[arg-type]
                        tar.addfile(member, io.BytesIO(data))  # type: ignore[arg-type]
                dvid_request(kv.server, "POST", f"{kv.node_path}/load", data=buffer.getvalue())
            for sv, data in pending:
                if data is None:
                    self.post("mesh", sv, None)
        finally:
            self._batch = None

    def fetch(self, kind: str, body: int) -> bytes:
        """A body's shape as DVID serves it."""
        kv = self.instance(kind)
        if kv is None:
            raise StoreError(f"{self.volume} keeps no {kind} in DVID")
        return bytes(dvid_request(kv.server, "GET", self._path(kv, kind, body)).content)
