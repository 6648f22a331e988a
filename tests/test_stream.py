"""convforge.stream.filter_chunks (the CLI's threaded streaming engine): equal to the
in-memory filter2d at every image and chunk edge for every border, each input chunk read
exactly once, the cache empty at the end, errors and early stops clean; TiffSource reads
what tifffile reads; the CLI completes under an address-space cap."""

import resource
import subprocess
import sys
import textwrap
import threading
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import convforge
from convforge.stream import _runs, _source_map, filter_chunks
from helpers import assert_same_image

BORDERS = ["zeros", "reflect", "replicate", "circular", "symmetric"]


def _assemble(job):
    out = np.full(job.shape, np.nan if job.dtype.kind == "f" else 0, job.dtype)
    seen = []
    for r0, r1, c0, c1, block in job.blocks():
        out[r0:r1, c0:c1] = block
        seen.append((r0, c0))
    assert seen == sorted(seen)                                   # row-major order
    return out


class Counting:
    """A source that records every region read (and can fail on the n-th read)."""

    def __init__(self, array, fail_at=None):
        self.array, self.shape, self.dtype = array, array.shape, array.dtype
        self.reads, self.fail_at = [], fail_at
        self.lock = threading.Lock()

    def __getitem__(self, key):
        with self.lock:
            self.reads.append(key)
            if self.fail_at is not None and len(self.reads) >= self.fail_at:
                raise OSError("disk went away")
        return self.array[key].copy()


def _close(got, expected):
    assert_same_image(got, expected, exact=got.dtype.kind in "iu")


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("shape, chunks, ksize, anchor", [
    ((37, 41), (5, 7), (3, 3), None),
    ((37, 41), (16, 16), (4, 6), (0, 5)),                 # even kernel, corner anchor
    ((20, 23, 3), (4, 3), (5, 5), None),                  # (H, W, C)
    ((6, 5), (1, 1), (3, 3), None),                       # every chunk smaller than the halo
    ((9, 13), (2, 3), (5, 9), (4, 0)),                    # halo spans several chunks
    ((64, 64), (64, 64), (7, 7), None),                   # one chunk
])
def test_equals_in_memory(border, shape, chunks, ksize, anchor):
    rng = np.random.default_rng(0)
    img = rng.standard_normal(shape).astype(np.float32)
    k = rng.standard_normal(ksize)
    try:
        expected = convforge.filter2d(img, k, border=border, anchor=anchor)
    except ValueError as exc:                     # the same error, before any chunk is read
        with pytest.raises(ValueError, match=str(exc)[:30]):
            filter_chunks(img, k, border=border, anchor=anchor, chunks=chunks)
        return
    for workers in (1, 3):
        job = filter_chunks(img, k, border=border, anchor=anchor, chunks=chunks,
                            workers=workers)
        _close(_assemble(job), expected)


def test_uint8_same_output_is_bit_exact_and_float64_dtype_kept():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (50, 61, 3), dtype=np.uint8)
    k = convforge.kernels.get("gaussian:sigma=1.5")
    expected = convforge.filter2d(img, k, output="same")
    got = _assemble(filter_chunks(img, k, output="same", chunks=(8, 13), workers=2))
    assert got.dtype == np.uint8 and np.array_equal(got, expected)
    f64 = _assemble(filter_chunks(img, k, dtype=torch.float64, chunks=16))
    assert f64.dtype == np.float64
    _close(f64, convforge.filter2d(img, k, dtype=torch.float64))


@pytest.mark.parametrize("border", BORDERS)
def test_each_input_chunk_is_read_once_and_the_cache_empties(border):
    rng = np.random.default_rng(2)
    img = rng.standard_normal((70, 90)).astype(np.float32)
    src = Counting(img)
    job = filter_chunks(src, np.ones((5, 5)), border=border, chunks=(16, 20), workers=3)
    _close(_assemble(job), convforge.filter2d(img, np.ones((5, 5)), border=border))
    chunks = Counter((key[0].start // 16, key[1].start // 20) for key in src.reads)
    assert set(chunks) == {(a, b) for a in range(5) for b in range(5)}
    assert max(chunks.values()) == 1                       # decompressed once each
    assert all(e.data is None for e in job.plan.cache.values())


@pytest.mark.parametrize("prefetch", [0, None])
def test_the_cache_holds_about_one_row_of_chunks(prefetch):
    img = np.random.default_rng(3).standard_normal((160, 160)).astype(np.float32)
    job = filter_chunks(img, np.ones((3, 3)), chunks=16, workers=1, prefetch=prefetch)
    peak = 0
    for _ in job.blocks():
        held = sum(e.data.size for e in job.plan.cache.values() if e.data is not None)
        peak = max(peak, held)
    # 10 chunks of 16 x 16 per row: the rest of the row being filtered and the start of
    # the next one as it is read (each chunk cut down to its edge strips once its own
    # output is done), not two whole rows (20 chunks); the reader runs 4 chunks ahead
    ahead = 0 if prefetch == 0 else 4
    assert 10 * 16 * 16 <= peak <= (14 + ahead) * 16 * 16


def test_a_failing_read_surfaces_and_stops_the_run():
    img = np.zeros((64, 64), np.float32)
    src = Counting(img, fail_at=5)
    job = filter_chunks(src, np.ones((3, 3)), chunks=8, workers=2)
    with pytest.raises(OSError, match="disk went away"):
        _assemble(job)
    assert len(src.reads) < 64                                # not every chunk was tried


def test_closing_early_cancels_the_chunks_not_started():
    img = np.zeros((128, 128), np.float32)
    src = Counting(img)
    blocks = filter_chunks(src, np.ones((3, 3)), chunks=8, workers=2).blocks()
    next(blocks)
    blocks.close()
    count = len(src.reads)
    assert count < 64
    assert torch.get_num_threads() >= 1


def test_bad_arguments_raise_clear_errors():
    img = np.zeros((8, 8), np.float32)
    with pytest.raises(ValueError, match=r"chunks must be positive, but got 0"):
        filter_chunks(img, np.ones((3, 3)), chunks=0)
    with pytest.raises(ValueError, match=r"source must be \(H, W\) or \(H, W, C\)"):
        filter_chunks(np.zeros(8), np.ones((3, 3)))
    with pytest.raises(ValueError, match="border must be one of"):
        filter_chunks(img, np.ones((3, 3)), border="wrap")
    with pytest.raises(TypeError, match="numeric"):
        filter_chunks(np.zeros((8, 8), bool), np.ones((3, 3)))


def test_runs_split_index_maps_where_they_turn_or_cross_chunks():
    # reflect on a 2-row image folds back at every step
    assert _runs(np.array([1, 0, 1, 0]), 4) == [(0, 2, 1, -1), (2, 4, 1, -1)]
    assert _runs(np.array([2, 1, 0, 1, 2, 3, 4]), 3) == [(0, 3, 2, -1), (3, 5, 1, 1),
                                                         (5, 7, 3, 1)]
    assert _runs(np.array([-1, -1, 0, 1, -1]), 8) == [(2, 4, 0, 1)]
    assert list(_source_map(4, 2, 1, "zeros")) == [-1, -1, 0, 1, 2, 3, -1]


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 30), w=st.integers(1, 30), ch=st.integers(1, 12),
       cw=st.integers(1, 12), kh=st.integers(1, 6), kw=st.integers(1, 6),
       border=st.sampled_from(BORDERS), workers=st.integers(1, 3), seed=st.integers(0, 99))
def test_property_equals_in_memory(h, w, ch, cw, kh, kw, border, workers, seed):
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((h, w))
    k = rng.standard_normal((kh, kw))
    try:
        expected = convforge.filter2d(img, k, border=border)
    except ValueError:
        return                                    # a kernel wider than the image
    _close(_assemble(filter_chunks(img, k, border=border, chunks=(ch, cw),
                                   workers=workers)), expected)


# ------------------------------------------------------------------------- TiffSource

def test_tiff_source_reads_what_tifffile_reads(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    pytest.importorskip("zarr")
    from convforge.cli_stream import TiffSource

    rng = np.random.default_rng(4)
    gray = rng.integers(0, 65535, (37, 53), dtype=np.uint16)
    rgb = rng.integers(0, 255, (30, 41, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "g.tif", gray)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "tiled.tif", rgb, photometric="rgb", tile=(16, 16))
    for name, full in [("g.tif", gray), ("rgb.tif", rgb), ("tiled.tif", rgb)]:
        src = TiffSource(tmp_path / name)
        assert src.shape == full.shape and src.dtype == full.dtype
        for key in [(slice(3, 17), slice(5, 29)), (slice(0, 30), slice(40, 41)),
                    (slice(10, 10), slice(0, 4)), (slice(2, 20, 3), slice(None))]:
            assert np.array_equal(src[key], full[key]), (name, key)
    assert TiffSource(tmp_path / "tiled.tif").chunks == (16, 16)
    assert TiffSource(tmp_path / "g.tif").chunks is None


def test_cli_streams_under_a_1_gib_address_space_cap(tmp_path):
    """The 1 GiB ``prlimit --as`` goal on a small TIFF (the 12000^2 one is in
    benchmarks/big_images.py): the run fits by choosing fewer workers, one malloc arena
    and single-threaded torch."""
    tifffile = pytest.importorskip("tifffile")
    pytest.importorskip("zarr")
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (1500, 1700), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", img)
    code = textwrap.dedent("""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from convforge.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    done = subprocess.run([sys.executable, "-c", code, "filter", str(tmp_path / "in.tif"),
                           str(tmp_path / "out.tif"), "-k", "box:5", "--dtype", "same",
                           "--chunks", "256"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-600:]
    expected = convforge.filter2d(img, convforge.kernels.get("box:5"), output="same")
    assert np.array_equal(tifffile.imread(tmp_path / "out.tif"), expected)
    assert resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY


def test_tiff_source_reports_a_truncated_file(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    from convforge.cli_stream import TiffSource

    tifffile.imwrite(tmp_path / "t.tif", np.ones((40, 50), np.uint8))
    src = TiffSource(tmp_path / "t.tif")
    size = (tmp_path / "t.tif").stat().st_size
    with open(tmp_path / "t.tif", "r+b") as f:                 # cut inside the pixel rows
        f.truncate(src.offset + 20 * 50 + 10)
    assert size > src.offset + 20 * 50 + 10
    assert np.array_equal(src[0:20, :], np.ones((20, 50), np.uint8))
    with pytest.raises(OSError, match="file ends inside the image data"):
        src[0:40, :]
