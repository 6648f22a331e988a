"""The ``convforge`` command: results against OpenCV / torch, and its safety rules."""

from __future__ import annotations

import importlib.util
import re

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import convforge
from convforge import cli
from convforge import kernels as K


@pytest.fixture(scope="module")
def camera():
    from skimage import data
    return data.camera()


@pytest.fixture()
def cam_png(tmp_path, camera):
    path = tmp_path / "camera.png"
    Image.fromarray(camera).save(path)
    return path


def run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(rc, err):
    assert rc == 1
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("convforge ")


# ------------------------------------------------------------------ filter: results

def test_sobel_npy_equals_cv2_sobel(capsys, tmp_path, cam_png, camera):
    out = tmp_path / "gx.npy"
    rc, _, err = run(capsys, "filter", cam_png, out, "--kernel", "sobel-x")
    assert rc == 0, err
    got = np.load(out)
    assert got.dtype == np.float64
    assert np.array_equal(got, cv2.Sobel(camera, cv2.CV_64F, 1, 0, ksize=3))


@pytest.mark.parametrize("border, cvb", [("zeros", cv2.BORDER_CONSTANT),
                                         ("replicate", cv2.BORDER_REPLICATE),
                                         ("symmetric", cv2.BORDER_REFLECT)])
def test_border_option(capsys, tmp_path, cam_png, camera, border, cvb):
    out = tmp_path / "l.npy"
    assert run(capsys, "filter", cam_png, out, "-k", "laplacian:8", "--border", border)[0] == 0
    ref = cv2.filter2D(camera, cv2.CV_64F, K.laplacian(8, dtype=torch.float64).numpy(),
                       borderType=cvb)
    assert np.array_equal(np.load(out), ref)


def test_png_output_signed_mapping(capsys, tmp_path, cam_png, camera):
    out = tmp_path / "gx.png"
    assert run(capsys, "filter", cam_png, out, "--kernel", "sobel-x")[0] == 0
    r = cv2.Sobel(camera, cv2.CV_64F, 1, 0, ksize=3)
    want = np.clip(np.rint(128 + 127 * r / np.abs(r).max()), 0, 255).astype(np.uint8)
    assert np.array_equal(np.asarray(Image.open(out)), want)
    out2 = tmp_path / "mag.png"
    assert run(capsys, "filter", cam_png, out2, "-k", "sobel-x", "--display", "abs")[0] == 0
    want = np.rint(255 * np.abs(r) / np.abs(r).max()).astype(np.uint8)
    assert np.array_equal(np.asarray(Image.open(out2)), want)


def test_png_output_clip_mapping_matches_cv2(capsys, tmp_path, cam_png, camera):
    out = tmp_path / "blur.png"
    assert run(capsys, "filter", cam_png, out, "-k", "gaussian:size=5,sigma=1.2")[0] == 0
    ref = cv2.GaussianBlur(camera, (5, 5), 1.2, borderType=cv2.BORDER_REFLECT_101)
    got = np.asarray(Image.open(out)).astype(int)
    assert np.abs(got - ref).max() <= 1                         # OpenCV rounds in fixed point


def test_rgb_jpeg_and_tiff(capsys, tmp_path):
    from skimage import data
    rgb = data.astronaut()[:96, :128]
    src = tmp_path / "a.tiff"
    Image.fromarray(rgb).save(src)
    for name in ("e.jpg", "e.tif", "e.npy"):
        assert run(capsys, "filter", src, tmp_path / name, "-k", "scharr-y")[0] == 0
    assert np.asarray(Image.open(tmp_path / "e.jpg")).shape == rgb.shape
    ref = cv2.filter2D(rgb, cv2.CV_64F, K.scharr("y", dtype=torch.float64).numpy())
    assert np.array_equal(np.load(tmp_path / "e.npy"), ref)


def test_kernel_sources(capsys, tmp_path, cam_png, camera):
    k = np.array([[1.0, -1.0]])
    ref = cv2.filter2D(camera, cv2.CV_64F, k)
    np.save(tmp_path / "k.npy", k)
    np.savetxt(tmp_path / "k.txt", k)
    for i, spec in enumerate(["[[1,-1]]", "[1, -1]", tmp_path / "k.npy", tmp_path / "k.txt"]):
        out = tmp_path / f"o{i}.npy"
        rc, _, err = run(capsys, "filter", cam_png, out, "--kernel", spec)
        assert rc == 0, err
        assert np.array_equal(np.load(out), ref), spec


def test_npy_input(capsys, tmp_path):
    x = np.random.default_rng(0).normal(size=(20, 30))
    np.save(tmp_path / "x.npy", x)
    assert run(capsys, "filter", tmp_path / "x.npy", tmp_path / "y.npy", "-k", "box:3")[0] == 0
    assert np.allclose(np.load(tmp_path / "y.npy"),
                       cv2.blur(x, (3, 3), borderType=cv2.BORDER_REFLECT_101))


# ------------------------------------------------------------------ filter: safety

@pytest.mark.parametrize("spec", ["sobol-x", "gaussian:sigma=-1", "[[1,-1]", "[[1],[2,3]]",
                                  "__import__('os').system('true')", "[['a']]", "[[nan]]",
                                  "missing.npy", "box:5,6"])
def test_bad_kernels_are_one_line_errors(capsys, tmp_path, cam_png, spec):
    rc, _, err = run(capsys, "filter", cam_png, tmp_path / "o.npy", "--kernel", spec)
    _one_line_error(rc, err)
    assert not (tmp_path / "o.npy").exists()


def test_bad_inputs_are_one_line_errors(capsys, tmp_path):
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "corrupt.npy").write_bytes(b"\x93NUMPY garbage")
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    np.save(tmp_path / "obj.npy", np.zeros(3))                          # 1D
    for name in ("absent.png", "corrupt.png", "corrupt.npy", "x.gif", "obj.npy"):
        rc, _, err = run(capsys, "filter", tmp_path / name, tmp_path / "o.png", "-k", "box")
        _one_line_error(rc, err)
    assert not (tmp_path / "o.png").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_existing_output_needs_force_and_input_is_never_overwritten(capsys, tmp_path, cam_png):
    before = cam_png.read_bytes()
    out = tmp_path / "o.npy"
    out.write_bytes(b"keep me")
    rc, _, err = run(capsys, "filter", cam_png, out, "-k", "sobel-x")
    _one_line_error(rc, err)
    assert "--force" in err and out.read_bytes() == b"keep me"
    assert run(capsys, "filter", cam_png, out, "-k", "sobel-x", "--force")[0] == 0
    assert np.load(out).shape == (512, 512)
    rc, _, err = run(capsys, "filter", cam_png, cam_png, "-k", "sobel-x", "--force")
    _one_line_error(rc, err)
    assert cam_png.read_bytes() == before
    rc, _, err = run(capsys, "filter", cam_png, tmp_path / "nodir" / "o.png", "-k", "box")
    _one_line_error(rc, err)
    rc, _, err = run(capsys, "filter", cam_png, tmp_path / "o.xyz", "-k", "box")
    _one_line_error(rc, err)


def test_failed_write_leaves_no_partial_file(capsys, tmp_path, cam_png, monkeypatch):
    def broken(fh, arr):
        fh.write(b"half")
        raise OSError("disk full")
    monkeypatch.setattr(np, "save", broken)
    rc, _, err = run(capsys, "filter", cam_png, tmp_path / "o.npy", "-k", "box")
    _one_line_error(rc, err)
    assert "disk full" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["camera.png"]


def test_directory_mode(capsys, tmp_path, camera):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(camera[i * 50:i * 50 + 64, :80]).save(src / f"p{i}.png")
    (src / "notes.txt").write_text("ignored")
    dst = tmp_path / "out" / "edges"
    rc, _, err = run(capsys, "filter", src, dst, "-k", "sobel-x", "--ext", "npy")
    assert rc == 0, err
    assert sorted(p.name for p in dst.iterdir()) == ["p0.npy", "p1.npy", "p2.npy"]
    ref = cv2.Sobel(camera[50:114, :80], cv2.CV_64F, 1, 0, ksize=3)
    assert np.array_equal(np.load(dst / "p1.npy"), ref)
    rc, _, err = run(capsys, "filter", src, dst, "-k", "sobel-x", "--ext", ".npy")
    _one_line_error(rc, err)
    assert run(capsys, "filter", src, dst, "-k", "sobel-x", "--ext", ".npy", "--force")[0] == 0
    rc, _, err = run(capsys, "filter", src, src, "-k", "box")
    _one_line_error(rc, err)


# ------------------------------------------------------------------ fit

@pytest.mark.skipif(importlib.util.find_spec("convforge.fit") is None,
                    reason="convforge.fit is written by another helper")
def test_fit_recovers_sobel(capsys, tmp_path, camera):
    x = camera[:64, :64]
    Image.fromarray(x).save(tmp_path / "x.png")
    np.save(tmp_path / "y.npy", cv2.Sobel(x, cv2.CV_64F, 1, 0, ksize=3))
    rc, out, err = run(capsys, "fit", tmp_path / "x.png", tmp_path / "y.npy", "--size", "3x3",
                       "--save", tmp_path / "k.npy")
    assert rc == 0, err
    assert "learned 3x3 kernel" in out
    assert np.allclose(np.load(tmp_path / "k.npy"), K.sobel("x").numpy(), atol=1e-6)
    valid = cv2.Sobel(x, cv2.CV_64F, 1, 0, ksize=3)[1:-1, 1:-1] + 5.0
    np.save(tmp_path / "yv.npy", valid)
    rc, out, err = run(capsys, "fit", tmp_path / "x.png", tmp_path / "yv.npy", "--size", "3",
                       "--bias")
    assert rc == 0, err
    assert re.search(r"bias: \[?5\.0*\]?", out), out
    rc, _, err = run(capsys, "fit", tmp_path / "x.png", tmp_path / "yv.npy", "--size", "4x4")
    _one_line_error(rc, err)
    rc, _, err = run(capsys, "fit", tmp_path / "x.png", tmp_path / "y.npy", "--size", "3by3")
    _one_line_error(rc, err)


# ------------------------------------------------------------------ shape

def _lenet():
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.Sigmoid(), nn.AvgPool2d(2, 2),
                         nn.Conv2d(6, 16, 5), nn.Sigmoid(), nn.AvgPool2d(2, 2), nn.Flatten(),
                         nn.Linear(400, 120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid(),
                         nn.Linear(84, 10))


def test_shape_lenet_matches_torch(capsys):
    from torch.utils.flop_counter import FlopCounterMode

    rc, out, _ = run(capsys, "shape", "--preset", "lenet")
    assert rc == 0
    assert "floor((28 + 2*2 - 1*(5-1) - 1)/1) + 1 = 28" in out
    net = _lenet()
    x = torch.zeros(1, 1, 28, 28)
    shapes = []
    for layer in net:
        x = layer(x)
        if not isinstance(layer, torch.nn.Sigmoid):
            shapes.append("x".join(map(str, x.shape[1:])))
    row = re.compile(r"\s*\d+\s+(conv|pool|flatten|linear)")
    rows = [line.split() for line in out.splitlines() if row.match(line)]
    assert [r[2] for r in rows] == shapes
    params = sum(p.numel() for p in net.parameters())
    assert f"total: {params:,} parameters" in out
    with FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 1, 28, 28))
    pool_ops = 6 * 14 * 14 * 4 + 16 * 5 * 5 * 4                # one op per window element
    total = int(re.search(r"([\d,]+) forward FLOPs", out).group(1).replace(",", ""))
    assert total == counter.get_total_flops() + pool_ops
    assert re.search(r"16x16 \(jump 4x4\)", out)               # receptive field after pool 2


def test_shape_custom_layers_and_errors(capsys):
    rc, out, _ = run(capsys, "shape", "--input", "3x224x224", "--layer", "conv:64,k=7,s=2,p=3",
                     "--layer", "maxpool:3,s=2,p=1", "--layer", "conv:64,k=3,p=same,s=2")
    assert rc == 0
    y = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 7, 2, 3), torch.nn.MaxPool2d(3, 2, 1))(
        torch.zeros(1, 3, 224, 224))
    assert f"{y.shape[1]}x{y.shape[2]}x{y.shape[3]}" in out and "64x28x28" in out
    for bad in (["--layer", "conv:6"], ["--input", "1x8x8", "--layer", "conv:2,k=9"],
                ["--input", "1x8x8", "--layer", "conv:x"], ["--input", "1x8x8", "--layer",
                                                           "warp:3"],
                ["--input", "3x8x8", "--layer", "conv:4,g=2"], ["--input", "8by8",
                                                                 "--layer", "pool:2"]):
        rc, _, err = run(capsys, "shape", *bad)
        _one_line_error(rc, err)


# ------------------------------------------------------------------ bench, demo, help

def test_bench_missing_and_present(capsys, tmp_path, monkeypatch):
    fake = tmp_path / "src" / "convforge" / "__init__.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("")
    monkeypatch.setattr(convforge, "__file__", str(fake))
    rc, _, err = run(capsys, "bench", "--quick")
    _one_line_error(rc, err)
    assert "not found" in err
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "run.py").write_text(
        "def main(argv):\n    print('ARGS', argv)\n    return 3\n")
    rc, out, _ = run(capsys, "bench", "--quick", "--json", "r.json")
    assert rc == 3 and "ARGS ['--quick', '--json', 'r.json']" in out


def test_demo_prints_both_chapters_and_writes_figures(capsys, tmp_path, monkeypatch):
    pytest.importorskip("convforge.fit")
    from convforge import photo
    full = photo.camera
    monkeypatch.setattr(photo, "camera", lambda: full()[:128, :160])   # a crop: faster
    out = tmp_path / "figs"
    rc, text, err = run(capsys, "demo", "--out", out)
    assert rc == 0, err
    assert "tensor([[19., 25.]" in text                        # the seed walk-through
    assert "Edges in the photograph" in text and "max |difference| = 0" in text
    assert "sobel-x    filter2d vs OpenCV: max |difference| = 0" in text
    for name in ("edges.png", "sobel.png", "gallery.png", "learned.png", "loss.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rc, _, err = run(capsys, "demo", "--out", out)             # figures exist: refuse
    _one_line_error(rc, err)


@pytest.mark.parametrize("command", ["filter", "fit", "shape", "bench", "dispatch", "warmup",
                                     "demo"])
def test_help_has_examples(capsys, command):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_demo_without_scikit_image_still_prints_the_chapter(capsys, monkeypatch):
    from convforge import photo

    def missing():
        raise photo.MissingDependency("demo: the photograph needs scikit-image")
    monkeypatch.setattr(photo, "camera", missing)
    rc, text, _ = run(capsys, "demo")
    assert rc == 0 and "tensor([[19., 25.]" in text and "skipped" in text


def test_dispatch_reports_every_shipped_fit(capsys):
    from convforge import dispatch

    rc, out, err = run(capsys, "dispatch")
    assert rc == 0 and not err
    for threads, model in dispatch.cost_models().items():
        assert f"on {threads} thread(s), {model['grid_shapes']} shapes" in out
    for name in dispatch.cost_model()["errors"]:
        assert f"error {name}" in out


def test_warmup_command(capsys):
    rc, out, err = run(capsys, "warmup", "--algorithm", "direct", "--dtype", "float64",
                       "--no-progress")
    assert rc == 0 and "ready: direct (" in out
    from convforge import _compile

    assert _compile.is_ready("direct", torch.float64)
    rc, _, err = run(capsys, "warmup", "--algorithm", "fft")
    _one_line_error(rc, err)
    assert "--algorithm must be one of" in err and "'fft'" in err
