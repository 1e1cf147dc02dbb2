"""What a person sees: the segmentation over its EM in Neuroglancer, drawn by a real
headless Chromium (Debian's chromium; the tests skip with one line where there is none)."""

from __future__ import annotations

import numpy as np
import pytest

import labelstitch as ls
from labelstitch._cli.main import ExitCode, main
from labelstitch.api import view
from labelstitch.synthetic import em_volume
from labelstitch.view import find_browser

pytestmark = pytest.mark.skipif(find_browser() is None, reason="needs Chromium (Debian's chromium package) for screenshots")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("view")
    gray, _ = em_volume((32, 96, 96), n_neurites=30, seed=5)
    np.save(folder / "gray.npy", gray)
    options = {"chunk-size": 32, "overlap": 6, "resolution": [8, 8, 8],
               "segmentor": {"configuration": {
                   "predict-voxels": {"function": "naive_membrane_predictions", "parameters": {"sigma": 1.0}},
                   "create-supervoxels": {"function": "seeded_watershed", "parameters": {"seed_threshold": 0.3}}}}}
    ls.run({"input": str(folder / "gray.npy"), "output": str(folder / "seg.zarr"), "options": options})
    ls.run({"input": str(folder / "gray.npy"), "output": str(folder / "seg.npy"), "options": options})
    return folder


def colourful(pixels):
    """The fraction of pixels with a clear hue, and the number of distinct coarse colours."""
    rgb = pixels[..., :3].astype(int)
    saturated = (rgb.max(axis=-1) - rgb.min(axis=-1)) > 40
    coarse = {tuple(c) for c in (rgb[saturated] // 32).tolist()}
    return saturated.mean(), len(coarse)


def test_segments_are_drawn_in_many_colours_over_the_em_and_the_em_alone_is_grey(outputs):
    with view(str(outputs / "seg.zarr")) as viewing:
        assert viewing.layers[:2] == ["em", "segmentation"]
        assert set(viewing.layers[2:]) <= {"likely false merges (stitch report)", "largest bodies (stitch report)"}
        assert viewing.layers[2:]  # the report's points, each kind its own coloured, named layer
        from PIL import Image

        viewing.screenshot(outputs / "legend.png", size=(400, 300))
        with Image.open(outputs / "legend.png") as written:  # the file carries a legend of the points, top left
            assert written.getpixel((4, 4))[:3] == (32, 32, 32) and written.size == (400, 300)
        shot = viewing.screenshot(size=(400, 300))
        fraction, colours = colourful(shot)
        assert shot.shape == (300, 400, 4) and fraction > 0.5 and colours >= 12, (fraction, colours)
        viewing.show("segmentation", False)
        grey = viewing.screenshot(size=(400, 300))
        fraction, _ = colourful(grey)
        rgb = grey[..., :3].astype(float)
        assert fraction < 0.02 and rgb.std() > 10  # grey EM with texture, not a blank page


def test_any_store_is_shown_and_the_cli_writes_a_png(outputs, tmp_path, capsys):
    with view(str(outputs / "seg.npy"), grayscale=str(outputs / "gray.npy")) as viewing:  # read through the stores
        fraction, colours = colourful(viewing.screenshot(size=(400, 300)))
        assert fraction > 0.5 and colours >= 12
    png = tmp_path / "shot.png"
    assert main(["view", str(outputs / "seg.zarr"), "--screenshot", str(png), "--size", "320x240"]) == ExitCode.OK
    import imageio.v3 as iio

    picture = iio.imread(png)
    assert picture.shape[:2] == (240, 320) and colourful(picture)[0] > 0.5
    assert main(["view", str(outputs / "seg.zarr"), "--screenshot", str(png), "--bodies", "1", "--size", "320x240"]) == ExitCode.OK


def test_meshes_of_the_selected_body_are_drawn_in_the_3d_panel_in_its_colour(outputs, tmp_path, capsys):
    import shutil

    for name in ("seg.zarr", "seg.npy"):  # served files and a store read box by box: both get the meshes
        shutil.copytree(outputs / name, tmp_path / name) if name.endswith(".zarr") else shutil.copy(outputs / name, tmp_path)
    with ls.stores.open_volume(str(tmp_path / "seg.zarr")) as seg:
        ids, counts = np.unique(seg.read(), return_counts=True)
    body = int(ids[1:][counts[1:].argmax()])

    def panels(output):
        with view(output, grayscale=str(outputs / "gray.npy"), bodies=[body], layout="xy-3d") as viewing:
            with viewing.viewer.txn() as state:
                state.layers["segmentation"].segment_colors = {body: "#ff00ff"}
            shot = viewing.screenshot(size=(600, 300))[:, 300:, :3].astype(int)  # the right half: 3-D
            return viewing.meshes, ((shot[..., 0] > 120) & (shot[..., 2] > 120) & (shot[..., 1] < 90)).mean()

    meshes, before = panels(str(tmp_path / "seg.zarr"))
    assert not meshes  # no meshes yet: the 3-D panel shows only the body's cross-section in the slice
    for name in ("seg.zarr", "seg.npy"):
        ls.mesh(str(tmp_path / name))
        meshes, magenta = panels(str(tmp_path / name))
        assert meshes and magenta > max(0.01, 4 * before), (name, magenta, before)
    # multi-resolution meshes in shards: Neuroglancer reads them with byte ranges, which the file server serves
    ls.mesh(str(tmp_path / "seg.zarr"), lods=2, sharded=True, overwrite=True)
    meshes, magenta = panels(str(tmp_path / "seg.zarr"))
    assert meshes and magenta > max(0.01, 4 * before), ("sharded", magenta, before)
    png = tmp_path / "shot.png"
    assert main(["view", str(tmp_path / "seg.zarr"), "--screenshot", str(png), "--bodies", str(body),
                 "--size", "600x300"]) == ExitCode.OK
    import imageio.v3 as iio

    assert colourful(iio.imread(png)[:, 300:])[0] > 0.01  # the body in 3-D beside the cross-section


def test_a_dvid_segmentation_over_dvid_grayscale_is_shown(outputs, dvid_server):
    import requests

    root = requests.post(f"{dvid_server.url}/repos", json={}).json()["root"]
    gray = np.load(outputs / "gray.npy")
    requests.post(f"{dvid_server.url}/repo/{root}/instance", json={"typename": "uint8blk", "dataname": "grayscale"})
    padded = np.zeros((32, 96, 96), np.uint8)
    padded[:] = gray
    size = "_".join(map(str, padded.shape[::-1]))
    assert requests.post(f"{dvid_server.url}/node/{root}/grayscale/raw/0_1_2/{size}/0_0_0", data=padded.tobytes()).ok
    node = f"dvid://{dvid_server.address}/{root}"
    ls.run({"input": f"{node}/grayscale", "output": f"{node}/seg",
            "options": {"chunk-size": 32, "overlap": 6, "resolution": [8, 8, 8]}}, create_output=True)
    with view(f"{node}/seg") as viewing:  # the grayscale the run recorded, read from DVID too
        assert viewing.layers[:2] == ["em", "segmentation"]
        fraction, colours = colourful(viewing.screenshot(size=(400, 300)))
        assert fraction > 0.5 and colours >= 12
