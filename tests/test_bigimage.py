"""Dask arrays through filter2d / conv2d (convforge.bigimage) and the streaming CLI: equal to
the in-memory result at every image and chunk edge, on the local and distributed
schedulers; atomic outputs; the missing-extra message."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import convforge
from convforge import kernels
from convforge.cli import main
from helpers import assert_same_image

da = pytest.importorskip("dask.array")
zarr = pytest.importorskip("zarr")
tifffile = pytest.importorskip("tifffile")

BORDERS = ["zeros", "reflect", "replicate", "circular", "symmetric"]


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("shape, chunks, layout", [
    ((37, 41), (5, 7), "HW"),
    ((20, 23, 3), (4, 3, 3), "HWC"),
    ((3, 19, 21), (1, 4, 5), "CHW"),
    ((2, 3, 17, 18), (1, 3, 2, 3), "NCHW"),
    ((6, 5), (1, 1), "HW"),                          # every chunk smaller than the halo
])
def test_filter2d_dask_equals_in_memory(shape, chunks, layout, border):
    rng = np.random.default_rng(0)
    img = rng.standard_normal(shape)
    for k in (rng.standard_normal((3, 3)), rng.standard_normal((4, 5)), np.array([[1.0, -1.0]])):
        try:
            expected = convforge.filter2d(img, k, border=border, layout=layout)
        except ValueError:                          # kernel wider than a reflect border
            with pytest.raises(ValueError):
                convforge.filter2d(da.from_array(img, chunks=chunks), k, border=border,
                                   layout=layout)
            continue
        lazy = convforge.filter2d(da.from_array(img, chunks=chunks), k, border=border,
                                  layout=layout)
        assert isinstance(lazy, da.Array)
        assert_same_image(lazy.compute(), expected, exact=False)


@pytest.mark.parametrize("border", BORDERS)
def test_uint8_same_output_is_exact(border):
    """Integer kernels on uint8: rounding and saturation as in memory, bit for bit."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (45, 38, 3), dtype=np.uint8)
    for name in ("sobel-x", "laplacian:8", "box:5"):
        k = kernels.get(name)
        expected = convforge.filter2d(img, k, border=border, output="same")
        got = convforge.filter2d(da.from_array(img, chunks=(7, 9, 3)), k, border=border,
                                 output="same").compute()
        assert_same_image(got, expected, exact=True)


def test_chunks_follow_the_input():
    img = da.zeros((100, 90), chunks=(30, 40))
    out = convforge.filter2d(img, np.ones((5, 5)), border="reflect")
    assert out.chunks == img.chunks
    cube = da.zeros((2, 3, 40, 50), chunks=(1, 1, 16, 25))
    y = convforge.conv2d(cube, torch.randn(8, 3, 3, 3), stride=2, padding=1)
    assert y.shape == (2, 8, 20, 25)
    assert y.chunks[0] == (1, 1) and y.chunks[1] == (8,)
    assert sum(y.chunks[2]) == 20 and y.chunks[3] == (13, 12)


@settings(max_examples=25, deadline=None)
@given(h=st.integers(3, 30), w=st.integers(3, 30), ch=st.integers(1, 9), cw=st.integers(1, 9),
       kh=st.integers(1, 5), kw=st.integers(1, 5), stride=st.integers(1, 3),
       dilation=st.integers(1, 2), mode=st.sampled_from(BORDERS), groups=st.sampled_from([1, 2]),
       same=st.booleans(), seed=st.integers(0, 100))
def test_conv2d_dask_property(h, w, ch, cw, kh, kw, stride, dilation, mode, groups, same, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 4, h, w))
    weight = torch.from_numpy(rng.standard_normal((6, 4 // groups, kh, kw)))
    bias = torch.from_numpy(rng.standard_normal(6))
    kw_ = dict(stride=stride, dilation=dilation, groups=groups, padding_mode=mode,
               padding="same" if same else (kh // 2, kw // 2))
    try:
        expected = convforge.conv2d(x, weight, bias, **kw_)
    except ValueError:
        with pytest.raises(ValueError):
            convforge.conv2d(da.from_array(x, chunks=(1, 2, ch, cw)), weight, bias, **kw_)
        return
    got = convforge.conv2d(da.from_array(x, chunks=(1, 2, ch, cw)), weight, bias, **kw_)
    assert_same_image(got.compute(), expected, exact=False)


def test_conv2d_dask_errors_are_the_in_memory_ones():
    x = da.zeros((1, 6, 8, 8), chunks=4)
    with pytest.raises(ValueError, match="in_channels \\(6\\) must be divisible by groups"):
        convforge.conv2d(x, torch.zeros(4, 2, 3, 3), groups=4)
    with pytest.raises(TypeError, match="float32 or float64"):
        convforge.conv2d(da.zeros((1, 1, 4, 4), dtype=np.int32), torch.zeros(1, 1, 2, 2))


def test_distributed_local_cluster_round_trip():
    distributed = pytest.importorskip("distributed")
    rng = np.random.default_rng(2)
    img = rng.standard_normal((96, 80)).astype(np.float32)
    k = rng.standard_normal((5, 5))
    expected = convforge.filter2d(img, k, border="symmetric")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        lazy = convforge.filter2d(da.from_array(img, chunks=(24, 20)), k, border="symmetric")
        got = client.compute(lazy).result()
    assert_same_image(got, expected, exact=False)


# ---------------------------------------------------------------------------- the CLI

@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (150, 170), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", a)
    tifffile.imwrite(tmp_path / "tiled.tif", np.stack([a, a.T[:150, :150].repeat(2, 1)[:, :170],
                                                        a[::-1]], -1),
                     photometric="rgb", tile=(32, 32))
    z = zarr.open(str(tmp_path / "in.zarr"), mode="w", shape=a.shape, dtype=np.float32,
                  chunks=(40, 40))
    z[:] = a.astype(np.float32)
    return tmp_path, a


def test_cli_streams_tiff_and_zarr_in_small_chunks(images):
    tmp, a = images
    assert main(["filter", str(tmp / "in.tif"), str(tmp / "o.zarr"), "-k", "sobel-x",
                 "--chunks", "16"]) == 0
    got = zarr.open(str(tmp / "o.zarr"), mode="r")[:]
    assert_same_image(got, convforge.filter2d(a, kernels.get("sobel-x")), exact=True)
    assert main(["filter", str(tmp / "in.zarr"), str(tmp / "o.tif"), "-k", "gaussian:sigma=2",
                 "--chunks", "24", "--dtype", "float64", "--border", "symmetric"]) == 0
    expected = convforge.filter2d(a.astype(np.float32), kernels.get("gaussian:sigma=2"),
                                  border="symmetric", dtype=torch.float64)
    assert_same_image(tifffile.imread(tmp / "o.tif"), expected, exact=False)
    rgb = tifffile.imread(tmp / "tiled.tif")
    assert main(["filter", str(tmp / "tiled.tif"), str(tmp / "rgb.tif"), "-k", "box:3",
                 "--chunks", "20", "--dtype", "same", "--scheduler", "processes"]) == 0
    assert_same_image(tifffile.imread(tmp / "rgb.tif"),
           convforge.filter2d(rgb, kernels.get("box:3"), output="same"), exact=True)


def test_cli_refuses_to_overwrite_and_replaces_with_force(images, capsys):
    tmp, _ = images
    out = tmp / "o.zarr"
    assert main(["filter", str(tmp / "in.tif"), str(out), "-k", "box:3"]) == 0
    assert main(["filter", str(tmp / "in.tif"), str(out), "-k", "box:3"]) == 1
    assert "exists already" in capsys.readouterr().err
    assert main(["filter", str(tmp / "in.tif"), str(out), "-k", "sobel-y", "--force"]) == 0
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("target", ["o.tif", "o.zarr"])
def test_cli_interrupted_run_leaves_nothing_or_the_previous_output(images, monkeypatch,
                                                                   target):
    tmp, _ = images
    out = tmp / target
    assert main(["filter", str(tmp / "in.tif"), str(out), "-k", "box:3", "--chunks", "32"]) == 0
    before = (tifffile.imread(out) if target.endswith(".tif")
              else zarr.open(str(out), mode="r")[:])
    from convforge import cli_stream

    calls = {"n": 0}

    class Interrupted:                             # Ctrl-C after the second band
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, *args):
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(cli_stream, "_progress", lambda *args: Interrupted())
    assert main(["filter", str(tmp / "in.tif"), str(out), "-k", "sobel-x", "--chunks", "32",
                 "--force"]) == 130
    after = (tifffile.imread(out) if target.endswith(".tif")
             else zarr.open(str(out), mode="r")[:])
    assert np.array_equal(before, after)                     # the previous output, intact
    assert [p.name for p in tmp.iterdir() if p.name.startswith(".")] == []   # no partial
    fresh = tmp / ("new" + out.suffix)
    calls["n"] = 0
    assert main(["filter", str(tmp / "in.tif"), str(fresh), "-k", "sobel-x", "--chunks",
                 "32"]) == 130
    assert not fresh.exists()


def test_missing_extra_is_one_clear_line():
    code = ("import sys; sys.modules['dask'] = None; sys.modules['dask.array'] = None\n"
            "import numpy as np, convforge.bigimage as b\n"
            "try:\n    b.require_dask('filter2d')\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "filter2d: dask arrays need dask: pip install convforge[dask]"


def test_cli_directory_streams_its_tiffs_and_refuses_a_zarr_out(images, capsys):
    tmp, a = images
    folder = tmp / "folder"
    folder.mkdir()
    tifffile.imwrite(folder / "big.tif", a)
    from PIL import Image

    Image.fromarray(a[:40, :50]).save(folder / "small.png")
    assert main(["filter", str(folder), str(tmp / "outs"), "-k", "box:3", "--chunks", "32",
                 "--dtype", "same"]) == 0
    streamed = tifffile.imread(tmp / "outs" / "big.tif")             # tiled, chunk by chunk
    assert_same_image(streamed, convforge.filter2d(a, kernels.get("box:3"), output="same"),
                      exact=True)
    with tifffile.TiffFile(tmp / "outs" / "big.tif") as tif:
        assert tif.pages[0].is_tiled
    assert (tmp / "outs" / "small.png").exists()                     # in memory, as before
    assert main(["filter", str(folder), str(tmp / "o.zarr"), "-k", "box:3"]) == 1
    assert "a directory IN is filtered image by image" in capsys.readouterr().err
