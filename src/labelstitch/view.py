"""Looking at results: Neuroglancer on 127.0.0.1 with the EM and the segmentation.

:func:`view` starts Neuroglancer's own Python server (the ``neuroglancer`` package bundles
the viewer) bound to 127.0.0.1, with the grayscale and the segmentation as layers at their
physical voxel size. Multiscale volumes whose files a browser can read as they are
(OME-Zarr groups) are served read-only, one small file server each on 127.0.0.1, so the
viewer reads their pyramids; every other volume (npy, HDF5, TIFF, DVID, plain zarr arrays)
is read box by box through labelstitch's stores. The stitch report's risky faces (where one
body joined many segments of a neighbour: the first place to look for a false merge) and
largest bodies are an annotation layer to jump to. :meth:`Viewing.screenshot` drives a
headless Chromium to a PNG once every visible chunk is drawn.
"""

from __future__ import annotations

import functools
import http.server
import io
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .geometry import Box, Plan
from .report import explain_body, report_paths
from .stores import PrecomputedShapes, StoreError, VolumeRef, VolumeStore, parse_volume

__all__ = ["Viewing", "find_browser", "view"]

#: where to look for a browser for screenshots (``$LABELSTITCH_CHROMIUM`` first)
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class _StoreArray:
    """A volume as the array-like Neuroglancer's ``LocalVolume`` reads, one box at a time."""

    def __init__(self, store: VolumeStore) -> None:
        self.store = store
        self.shape = store.shape
        self.dtype = store.dtype if store.dtype != np.bool_ else np.dtype(np.uint8)
        self.ndim = 3

    def __getitem__(self, index: tuple[slice, ...]) -> NDArray[Any]:
        start = tuple(s.start or 0 for s in index)
        stop = tuple(n if s.stop is None else s.stop for s, n in zip(index, self.shape))
        return self.store.read(Box(start, stop)).astype(self.dtype, copy=False)


class _ReadOnlyFiles(http.server.SimpleHTTPRequestHandler):
    """GET and HEAD of one folder's files, readable from the viewer's page (CORS), with byte
    ranges (``Range: bytes=A-B``), which Neuroglancer asks for to read one level of a
    multi-resolution mesh or one body from a shard file."""

    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Expose-Headers", "Content-Range, Content-Length")
        super().end_headers()

    def send_head(self) -> Any:
        wanted = self.headers.get("Range", "")
        path = Path(self.translate_path(self.path))
        if not wanted.startswith("bytes=") or "," in wanted or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        first, _, last = wanted[len("bytes="):].partition("-")
        try:
            start, stop = (size - int(last), size) if not first else (int(first), min(int(last) + 1, size) if last else size)
        except ValueError:
            return super().send_head()
        if not 0 <= start < stop <= size:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.end_headers()
            return None
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(stop - start)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        return io.BytesIO(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass


def _serve_folder(folder: Path) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_ReadOnlyFiles, directory=str(folder)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return server


def find_browser() -> str | None:
    """A Chromium-like browser for screenshots: ``$LABELSTITCH_CHROMIUM``, else the first of
    :data:`BROWSERS` on the PATH (None: there is none)."""
    chosen = os.environ.get("LABELSTITCH_CHROMIUM")
    if chosen:
        return chosen if shutil.which(chosen) or Path(chosen).is_file() else None
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


@dataclass
class Viewing:
    """A running viewer: ``viewer`` is the ``neuroglancer.Viewer`` (usable in a notebook),
    ``url`` the page to open. :meth:`close` stops the file servers."""

    viewer: Any
    url: str
    shape: tuple[int, ...]
    layers: list[str]
    #: whether the segmentation has meshes (``labelstitch mesh``), drawn in the 3-D panel
    meshes: bool = False
    _servers: list[http.server.ThreadingHTTPServer] = field(default_factory=list, repr=False)
    _stores: list[VolumeStore] = field(default_factory=list, repr=False)

    def show(self, layer: str, visible: bool = True) -> None:
        """Show or hide one layer (``"em"``, ``"segmentation"``, or a report layer of :data:`REPORT_LAYERS`)."""
        with self.viewer.txn() as state:
            state.layers[layer].visible = visible

    def set_layout(self, layout: str) -> None:
        """Neuroglancer's panel layout: ``"xy"``, ``"xy-3d"`` (a cross-section beside the 3-D
        panel of the selected bodies' meshes), ``"3d"``, ``"4panel"``, ..."""
        with self.viewer.txn() as state:
            state.layout = layout

    def screenshot(self, path: str | os.PathLike[str] | None = None, *, size: tuple[int, int] = (800, 600),
                   timeout: float = 180.0) -> NDArray[np.uint8]:
        """The (height, width, 4) RGBA picture of the cross-section once every visible chunk is
        drawn, from a headless Chromium started for it in its own process group (and killed
        with it); also written to ``path`` as a PNG if given.

        Raises
        ------
        RuntimeError
            No browser is found (install Debian's ``chromium`` or set ``$LABELSTITCH_CHROMIUM``),
            or it draws nothing within ``timeout`` seconds.
        """
        browser = find_browser()
        if browser is None:
            raise RuntimeError("no Chromium for a screenshot: install Debian's chromium or set $LABELSTITCH_CHROMIUM")
        profile = tempfile.mkdtemp(prefix="labelstitch-chromium-")
        command = [
            browser, "--headless=new", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
            "--disable-quic", "--disable-extensions", f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
            self.url,
        ]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        result: list[Any] = []
        worker = threading.Thread(target=lambda: result.append(self.viewer.screenshot(size=list(size))), daemon=True)
        try:
            worker.start()
            worker.join(timeout)
            if not result:
                raise RuntimeError(f"the browser drew nothing within {timeout:.0f} s ({browser})")
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
            shutil.rmtree(profile, ignore_errors=True)
        shot = result[0].screenshot
        pixels = np.asarray(shot.image_pixels)
        if path is not None:
            _with_legend(pixels, self._legend()).save(path)
        return pixels

    def _legend(self) -> list[tuple[str, str]]:
        """(name, colour) of the stitch report's visible point layers."""
        with self.viewer.txn() as state:
            shown = {layer.name for layer in state.layers if layer.visible is not False}
        return [(name, colour) for name, _, colour in REPORT_LAYERS if name in self.layers and name in shown]

    def close(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for store in self._stores:
            store.close()
        self._servers.clear()
        self._stores.clear()

    def __enter__(self) -> Viewing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _layer_source(store: VolumeStore, resolution: tuple[float, ...], kind: str, viewing: Viewing) -> Any:
    """The layer's data: the files themselves where a browser can read them at this voxel
    size, else the store read box by box on the segmentation's voxel grid."""
    import neuroglancer

    folder = store.ref.served_files()
    recorded = store.voxel_size
    if folder is not None and recorded is not None and np.allclose(recorded, resolution):
        server = _serve_folder(folder)
        viewing._servers.append(server)
        return f"zarr3://http://127.0.0.1:{server.server_address[1]}/"
    space = neuroglancer.CoordinateSpace(names=["z", "y", "x"], units="nm", scales=list(resolution))
    volume = neuroglancer.LocalVolume(_StoreArray(store), dimensions=space, volume_type=kind)
    # the voxels only: Neuroglancer would otherwise ask this source for meshes it cannot make
    return neuroglancer.LayerDataSource(url=volume, enable_default_subsources=False,
                                        subsources={"default": True, "bounds": True})


def _mesh_source(ref: VolumeRef, viewing: Viewing) -> str | None:
    """The segmentation's meshes (``labelstitch mesh``) as a second source of its layer, so
    the 3-D panel draws the selected bodies; None where it has none."""
    try:
        meshes = PrecomputedShapes.of(ref)
    except StoreError:
        return None
    if not meshes.exists("mesh"):
        return None
    server = _serve_folder(meshes.root)
    viewing._servers.append(server)
    return f"precomputed://http://127.0.0.1:{server.server_address[1]}/mesh"


def _with_legend(pixels: NDArray[np.uint8], legend: list[tuple[str, str]]) -> Any:
    """The screenshot as a PIL image, with a legend of the report's points in its top left
    corner (nothing added without them)."""
    from PIL import Image, ImageDraw

    picture = Image.fromarray(pixels[..., :3].astype(np.uint8))
    if legend:
        draw = ImageDraw.Draw(picture)
        height = 14 * len(legend) + 6
        width = 8 + 6 * max(len(name) for name, _ in legend) + 18
        draw.rectangle([2, 2, 2 + width, 2 + height], fill=(32, 32, 32))
        for k, (name, colour) in enumerate(legend):
            y = 6 + 14 * k
            draw.ellipse([8, y + 2, 16, y + 10], fill=colour, outline="black")
            draw.text((22, y), name, fill="white")
    return picture


#: the stitch report's points in the view: (layer name, kind of point, colour)
REPORT_LAYERS = (
    ("likely false merges (stitch report)", "risky-", "#ff3030"),
    ("largest bodies (stitch report)", "largest-", "#ffd700"),
)


def _report_points(output: VolumeRef, metadata: dict[str, Any], resolution: tuple[float, ...]) -> list[Any]:
    """Point annotations at the stitch report's risky faces and largest bodies."""
    import neuroglancer

    folder = (metadata.get("config") or {}).get("options", {}).get("checkpoint-dir")
    paths = report_paths(output, folder)
    if paths is None or not paths["json"].exists() or "plan" not in metadata:
        return []
    report = json.loads(paths["json"].read_text())
    faces = Plan.from_dict(metadata["plan"]).faces()

    def centre(face: int) -> list[float]:
        box = faces[face].box
        return [(a + b) / 2 for a, b in zip(box.start, box.stop)]

    points = []
    for k, risky in enumerate(report.get("risky_faces", [])):
        points.append(neuroglancer.PointAnnotation(
            id=f"risky-{k}", point=centre(risky["face"]), segments=[[risky["body"]]],
            description=f"body {risky['body']} joins {risky['segments']} segments of subvolume "
                        f"{risky['subvolumes'][0 if risky['side'] == 'a' else 1]} here: a likely false merge",
        ))
    if paths["npz"].exists():
        for k, big in enumerate(report.get("largest_bodies", [])[:5]):
            try:
                matches = explain_body(paths["npz"], big["body"])["matches"]
            except ValueError:
                continue
            if matches:
                points.append(neuroglancer.PointAnnotation(
                    id=f"largest-{k}", point=centre(matches[0]["face"]), segments=[[big["body"]]],
                    description=f"body {big['body']}: {big['segments']} segments across {big['faces_crossed']} faces",
                ))
    return points


def view(
    output: str,
    *,
    grayscale: str | None = None,
    bodies: list[int] | tuple[int, ...] = (),
    port: int = 0,
    layout: str = "4panel",
) -> Viewing:
    """Serve Neuroglancer on 127.0.0.1 showing ``output`` (a segmentation volume string)
    over its grayscale: ``grayscale``, else the image the run recorded in the output's
    metadata (its input, or the copy ``options.write-grayscale`` made). ``bodies`` selects
    bodies; ``port`` 0 takes a free one. Returns a :class:`Viewing`."""
    import neuroglancer

    neuroglancer.set_server_bind_address("127.0.0.1", bind_port=port)
    seg = parse_volume(output).open()
    metadata = seg.metadata
    image = grayscale or metadata.get("image")
    resolution = tuple(seg.voxel_size or metadata.get("resolution") or (1.0, 1.0, 1.0))
    viewer = neuroglancer.Viewer()
    viewing = Viewing(viewer, "", seg.shape, [], _stores=[seg])
    try:
        gray = parse_volume(image).open() if image else None
        if gray is not None:
            viewing._stores.append(gray)
        with viewer.txn() as state:
            state.dimensions = neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm", scales=list(resolution[::-1]))
            if gray is not None:
                state.layers["em"] = neuroglancer.ImageLayer(source=_layer_source(gray, resolution, "image", viewing))
                viewing.layers.append("em")
            source = _layer_source(seg, resolution, "segmentation", viewing)
            meshes = _mesh_source(seg.ref, viewing)
            layer = neuroglancer.SegmentationLayer(source=[source, meshes] if meshes else source)
            if bodies:
                layer.segments = [int(b) for b in bodies]
            state.layers["segmentation"] = layer
            viewing.layers.append("segmentation")
            points = _report_points(seg.ref, metadata, resolution)
            space = neuroglancer.CoordinateSpace(names=["z", "y", "x"], units="nm", scales=list(resolution))
            # one layer per kind of point, coloured apart: the layer names are the legend
            for name, kind, colour in REPORT_LAYERS:
                mine = [p for p in points if p.id.startswith(kind)]
                if mine:
                    state.layers[name] = neuroglancer.LocalAnnotationLayer(
                        dimensions=space, annotations=mine, annotation_color=colour,
                        linked_segmentation_layer={"segments": "segmentation"},
                    )
                    viewing.layers.append(name)
            state.position = [n / 2 for n in seg.shape[::-1]]
            state.cross_section_scale = max(seg.shape[2] / 700, seg.shape[1] / 500, 1e-3)
            state.layout = layout
            if meshes:
                viewing.meshes = True
                state.projection_scale = 1.5 * max(seg.shape)  # the whole volume in the 3-D panel
                state.show_slices = False  # the panel shows the bodies alone
                state.projection_orientation = [0.25, -0.2, 0.05, 0.945]  # a little from the side
    except BaseException:
        viewing.close()
        raise
    viewing.url = viewer.get_viewer_url()
    return viewing
