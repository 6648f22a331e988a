"""``convforge filter`` for images larger than memory: Zarr and (Big)TIFF in and out, chunk
by chunk. A .zarr IN or OUT, ``--chunks``, or a TIFF of more than 16 Mpixels written to
TIFF streams. A streamed run starts no background compilation: it plans with the kernels
that need none (torch's, ``fft``, ``shift``; the compiled ones too if this process has them
already), keeping Numba's ~110 MiB out of it.

The input is opened lazily (a contiguous TIFF read row segment by row segment, a tiled TIFF
through tifffile's Zarr view, or a Zarr array). With the default ``--scheduler threads``
the chunks go through :func:`convforge.stream.filter_chunks` (each input chunk read and
decompressed once, a row of chunks in memory, worker threads reading, filtering and
writing consecutive chunks); with ``processes`` or a ``dask.distributed`` ADDRESS the image
is filtered as a dask array (:mod:`convforge.bigimage`) and computed band by band. The
output is written under a temporary name in OUT's folder and renamed onto OUT only once
complete; an interrupted or failed run removes it, so OUT is never a partial result (an
existing OUT, replaced with ``--force``, stays until the new one is complete).
"""

from __future__ import annotations

import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .cli_io import CLIError

ZARR = (".zarr",)
TIFF = (".tif", ".tiff")
#: the workspace limit of a streamed run's convolutions (bytes)
STREAM_WORKSPACE = 8 << 20
#: chunks computed together (per row of chunks): their inputs, halos included, are what
#: a streamed run holds in memory
_BLOCK_CHUNKS = 4
#: a TIFF input of more pixels than this is streamed even to a TIFF output (filtering
#: in memory holds a float64 copy: 8 bytes per pixel and channel, twice)
STREAM_PIXELS = 1 << 24


def wants_streaming(inp: Path, out: Path, chunks) -> bool:
    """Whether ``convforge filter IN OUT`` streams: a Zarr input or output, ``--chunks``,
    or a TIFF input of more than :data:`STREAM_PIXELS` pixels written to TIFF."""
    si, so = inp.suffix.lower(), out.suffix.lower()
    if si in ZARR or so in ZARR or chunks is not None:
        return True
    if not (si in TIFF and so in TIFF and inp.is_file()):
        return False
    try:
        import tifffile

        with tifffile.TiffFile(inp) as tif:
            return int(np.prod(tif.series[0].shape)) > STREAM_PIXELS
    except Exception:                                      # noqa: BLE001 - read later
        return False


def _require(dask=True):
    """``(dask.array or None, zarr, tifffile)``, or a one-line error naming the extra."""
    try:
        import tifffile
        import zarr

        if dask:
            import dask.array as da
    except ImportError:
        raise CLIError("streaming Zarr/TIFF files needs dask, zarr and tifffile: "
                       "pip install convforge[dask]") from None
    return (da if dask else None), zarr, tifffile


class TiffSource:
    """A TIFF read region by region (``source[rows, cols]``): a contiguous image by
    reading each row's segment straight into the result, a tiled or compressed one through
    tifffile's Zarr view of its tiles or strips. Each read opens the file, so the object
    pickles as a path and runs on process and distributed workers."""

    def __init__(self, path):
        import tifffile

        self.path = str(path)
        with tifffile.TiffFile(self.path) as tif:
            series = tif.series[0]
            self.shape, self.dtype = tuple(series.shape), np.dtype(series.dtype)
            self.offset = series.dataoffset
            page = series.pages[0]
            tiled = getattr(page, "is_tiled", False)
            self.chunks = (page.tilelength, page.tilewidth) if tiled else None
        self.ndim = len(self.shape)

    def __getitem__(self, key):
        import tifffile
        import zarr

        key = key if isinstance(key, tuple) else (key,)
        if self.offset is None or not all(isinstance(k, slice) for k in key):
            with tifffile.TiffFile(self.path) as tif:
                return np.asarray(zarr.open(tif.aszarr(), mode="r")[key])
        key = key + (slice(None),) * (self.ndim - len(key))
        (r0, r1, rs), (c0, c1, cs) = (k.indices(n) for k, n in zip(key[:2], self.shape[:2],
                                                                     strict=True))
        rest = key[2:]
        pixel = int(np.prod(self.shape[2:], dtype=np.int64)) * self.dtype.itemsize
        pitch = self.shape[1] * pixel
        out = np.empty((max(0, r1 - r0), max(0, c1 - c0)) + self.shape[2:], self.dtype)
        with open(self.path, "rb", buffering=0) as f:
            for i, r in enumerate(range(r0, r1)):            # the row segments only
                view = memoryview(out[i]).cast("B")
                position = self.offset + r * pitch + c0 * pixel
                if hasattr(os, "preadv"):
                    got = os.preadv(f.fileno(), [view], position)
                else:                                        # no preadv (Windows)
                    f.seek(position)
                    got = f.readinto(view)
                if got != view.nbytes:
                    raise OSError(f"{self.path}: file ends inside the image data")
        return out[(slice(None, None, rs), slice(None, None, cs)) + rest]


def open_source(path: Path):
    """The image at ``path`` as a sliceable (H, W[, C]) source and its native chunk shape
    (None: none)."""
    _, zarr, _ = _require(dask=False)
    suffix = path.suffix.lower()
    try:
        if suffix in ZARR:
            arr = zarr.open(str(path), mode="r")
            if not hasattr(arr, "shape"):                 # a group: its only array
                names = list(arr.array_keys())
                if len(names) != 1:
                    raise CLIError(f"{path}: a Zarr group must hold exactly one array, but "
                                   f"holds {names}")
                arr = arr[names[0]]
            native = tuple(arr.chunks[:2])
        elif suffix in TIFF:
            arr = TiffSource(path)
            native = arr.chunks
        else:
            raise CLIError(f"{path}: streaming reads .zarr and .tif/.tiff, not {suffix!r}")
    except CLIError:
        raise
    except Exception as exc:                              # noqa: BLE001 - one line
        raise CLIError(f"{path}: cannot open: {exc}") from None
    if len(arr.shape) not in (2, 3):
        raise CLIError(f"{path}: expected an (H, W) or (H, W, C) image, but got shape "
                       f"{tuple(arr.shape)}")
    return arr, native


def chunk_shape(native, chunks: int | None, side: int = 1024) -> tuple[int, int]:
    """The streamed chunk (rows, cols): ``--chunks``, else whole native chunks (Zarr
    chunks, TIFF tiles) near ``side``, else ``side``."""
    if chunks is not None:
        return chunks, chunks
    if native is None:
        return side, side
    return tuple(c if c > side else c * max(1, side // c) for c in native)


def open_lazy(source, chunks: tuple[int, int]):
    """A source (:func:`open_source`) as a dask array of ``chunks`` spatial chunks."""
    da, _, _ = _require()
    spatial = tuple(chunks) + ((-1,) if len(source.shape) == 3 else ())
    return da.from_array(source, chunks=spatial, lock=False, asarray=True)


@contextmanager
def scheduler(name: str | None):
    """dask's scheduler for the run: ``threads``, ``processes`` or a distributed
    scheduler's ADDRESS (a client connected for the run, closed after)."""
    import dask

    if name in (None, "threads", "processes", "synchronous"):
        with dask.config.set(scheduler=name or "threads"):
            yield None
        return
    try:
        from distributed import Client
    except ImportError:
        raise CLIError("--scheduler ADDRESS needs dask.distributed: "
                       "pip install convforge[dask]") from None
    try:
        client = Client(name, timeout="10s")
    except Exception as exc:                              # noqa: BLE001 - one line
        raise CLIError(f"--scheduler {name}: cannot connect: {exc}") from None
    try:
        with dask.config.set(scheduler=client):
            yield client
    finally:
        client.close()


def _progress(total, desc):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="band", file=sys.stderr, delay=0.5, leave=False)


def _temporary(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial-{os.getpid()}{out.suffix}")


def _remove(path: Path):
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def _publish(tmp: Path, out: Path):
    """Rename the complete ``tmp`` onto ``out`` (a directory store too: the old one is
    moved aside first and removed after)."""
    if out.exists() and out.is_dir():
        aside = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(aside)
        tmp.rename(out)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(tmp, out)


@contextmanager
def _atomic(out: Path):
    """A temporary name for OUT, renamed onto OUT when the block completes and removed when
    it fails or is interrupted."""
    tmp = _temporary(out)
    _remove(tmp)
    try:
        yield tmp
        _publish(tmp, out)
    except BaseException:
        _remove(tmp)
        raise


def _zarr_output(zarr, tmp: Path, shape, dtype, chunks):
    return zarr.open(str(tmp), mode="w", shape=tuple(shape), dtype=dtype,
                     chunks=tuple(min(c, n) for c, n in zip(chunks, shape[:2], strict=True))
                     + tuple(shape[2:]),
                     # every chunk is written anyway: no scan for all-fill chunks to skip
                     config={"write_empty_chunks": True})


def _tile_rows(rows, side):
    for t in range(0, len(rows), side):
        for c in range(0, rows.shape[1], side):
            yield np.ascontiguousarray(rows[t:t + side, c:c + side])


def _write_tiff(tifffile, tmp: Path, shape, dtype, chunks, bands) -> None:
    """Write ``bands`` (``(r0, r1, rows)`` in order, any heights) as a tiled BigTIFF."""
    side = max(16, min(256, min(chunks) // 16 * 16))        # TIFF tiles: multiples of 16

    def tiles():                          # tifffile takes the tiles in row-major order
        carry = None
        for _, _, rows in bands:
            rows = rows if carry is None else np.concatenate([carry, rows])
            whole = len(rows) // side * side
            yield from _tile_rows(rows[:whole], side)
            carry = rows[whole:]
        if carry is not None and len(carry):
            yield from _tile_rows(carry, side)

    photometric = "rgb" if len(shape) == 3 and shape[2] in (3, 4) else "minisblack"
    tifffile.imwrite(tmp, tiles(), shape=tuple(shape), dtype=dtype, tile=(side, side),
                     bigtiff=True, photometric=photometric,
                     planarconfig="contig" if len(shape) == 3 else None)


def _trim() -> None:
    """Hand the pages malloc holds free back to the system (glibc's ``malloc_trim``), once
    per row of chunks: the chunk-sized buffers freed between rows otherwise stay resident
    (16384^2 float32 Zarr, 5x5: 430-441 MiB peak RSS instead of 464-488, as fast)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _run_threads(source, out: Path, chunks, options, left) -> np.dtype:
    """The threaded engine: each input chunk read once, chunks written as computed."""
    from contextlib import closing

    import torch

    from .stream import filter_chunks

    _, zarr, tifffile = _require(dask=False)
    workers = _workers(source.shape, source.dtype, chunks, torch.get_num_threads(), left)
    # under an address-space cap torch starts no thread pool of its own and no reader
    # thread reads ahead (each thread reserves a stack and more)
    capped = left is not None
    job = filter_chunks(source, chunks=chunks, workers=workers, **options,
                        torch_threads=1 if capped else None, prefetch=0 if capped else None)
    width = source.shape[1]
    with _atomic(out) as tmp, _progress(len(job.plan.rows), "filter") as bar:
        if out.suffix.lower() in ZARR:
            z = _zarr_output(zarr, tmp, job.shape, job.dtype, chunks)

            def put(r0, r1, c0, c1, block):
                z[r0:r1, c0:c1] = block

            with closing(job.blocks(write=put)) as blocks:
                for *_, c1, _ in blocks:
                    if c1 == width:
                        bar.update()
                        _trim()
        else:
            def bands():
                with closing(job.blocks()) as blocks:
                    rows = None
                    for r0, r1, c0, c1, block in blocks:
                        if c0 == 0:
                            rows = np.empty((r1 - r0,) + tuple(job.shape[1:]), job.dtype)
                        rows[:, c0:c1] = block
                        if c1 == width:
                            yield r0, r1, rows
                            bar.update()
                            _trim()

            _write_tiff(tifffile, tmp, job.shape, job.dtype, chunks, bands())
    return job.dtype


def _run_dask(source, out: Path, chunks, options, name) -> np.dtype:
    """Through dask (:mod:`convforge.bigimage`) on the ``processes`` scheduler or a
    ``dask.distributed`` cluster, band by band (a few chunks per store at a time)."""
    from .filters import filter2d

    da, zarr, tifffile = _require()
    image = open_lazy(source, chunks)
    result = filter2d(image, layout="HW" if image.ndim == 2 else "HWC", **options)
    h, w = result.shape[:2]
    bands = [(r, min(h, r + chunks[0])) for r in range(0, h, chunks[0])]
    with scheduler(name), _atomic(out) as tmp, _progress(len(bands), "filter") as bar:
        if out.suffix.lower() in ZARR:
            z = _zarr_output(zarr, tmp, result.shape, result.dtype, chunks)
            width = chunks[1] * _BLOCK_CHUNKS
            for r0, r1 in bands:                 # each chunk written as soon as computed
                for c0 in range(0, w, width):    # a few chunks at a time
                    region = (slice(r0, r1), slice(c0, min(w, c0 + width)))
                    da.store(result[region], z, regions=region, lock=False)
                bar.update()
        else:
            def computed():
                for r0, r1 in bands:
                    yield r0, r1, result[r0:r1].compute()
                    bar.update()

            _write_tiff(tifffile, tmp, result.shape, result.dtype, chunks, computed())
    return np.dtype(result.dtype)


def check_streaming_output(inp: Path, out: Path, force: bool) -> None:
    """The checks of a streamed OUT (a .zarr store is a directory)."""
    if out.exists() and inp.exists() and out.resolve() == inp.resolve():
        raise CLIError(f"{out}: refusing to write over the input")
    if out.exists() and not force:
        raise CLIError(f"{out}: exists already (use --force to replace it)")
    if out.exists() and out.is_dir() and out.suffix.lower() not in ZARR:
        raise CLIError(f"{out}: is a directory (give a .zarr or .tif name)")
    if not out.parent.is_dir():
        raise CLIError(f"{out.parent}: no such directory")
    if out.suffix.lower() not in ZARR + TIFF:
        raise CLIError(f"{out}: a streamed result is written as .zarr or .tif/.tiff, not "
                       f"{out.suffix or '(none)'!r}")


def _fewer_arenas(capped: bool) -> None:
    """glibc's malloc shares two arenas between all threads of a streamed run, one under an
    address-space cap (``M_ARENA_MAX``): threads (workers, Zarr's I/O threads) allocating
    and freeing chunk-sized buffers in arenas of their own keep more freed memory resident
    (16384^2 float32 Zarr, 5x5: 461-469 MiB peak RSS instead of 494-505, as fast), and under
    ``prlimit --as`` each further arena reserves 64 MiB of address space before any image
    data."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, 1 if capped else 2)    # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def _workers(shape, dtype, chunks, threads: int, left: int | None) -> int:
    """Worker threads of a threaded run: one more than torch's threads (a worker waiting
    for its read or write leaves its core to another's filtering: 16384^2 float32 Zarr,
    5x5, 3.7 s with 3 workers, 4.0 s with 2), fewer under an address-space cap: each needs
    about 64 MiB as a thread (its stack, and what torch and the allocator map per thread:
    measured +51 MiB of address space for the first thread that convolves), the workspace
    limit and ten float64 copies of a chunk (the region, its conversion, the response,
    rounding, and room for the allocator's fragments); the cache two rows of input chunks,
    and 128 MiB stay for the rest (the output's writer, the plans, the progress bar)."""
    if left is None:
        return threads + 1
    channels = int(np.prod(shape[2:], dtype=np.int64))
    pixels = (chunks[0] + 64) * (chunks[1] + 64) * channels
    each = (64 << 20) + STREAM_WORKSPACE + 10 * 8 * pixels
    cache = 2 * chunks[0] * shape[1] * channels * np.dtype(dtype).itemsize
    return int(max(1, min(threads + 1, (left - cache - (128 << 20)) // each)))


def filter_streaming(inp: Path, out: Path, kernel, args) -> None:
    """``convforge filter`` of a large image: lazily read, filtered per chunk, written
    band by band."""
    from . import _compile, workspace

    _fewer_arenas(workspace._address_space_left() is not None)
    before = workspace._STATE["limit"]
    # a chunk's own work is small: tiles of at most 8 MiB of workspace per call keep a
    # streamed run's memory near its chunks' (16384^2 float32 Zarr, 15x15, 3 workers:
    # 487-491 MiB peak RSS with 8 MiB, 515-521 with 16 MiB, no slower)
    workspace.set_workspace_limit(min(workspace.get_workspace_limit(), STREAM_WORKSPACE))
    try:
        with _compile.no_background():   # no Numba (~110 MiB) loaded mid-run
            _filter_streaming(inp, out, kernel, args)
    finally:
        workspace._STATE["limit"] = before


def _filter_streaming(inp: Path, out: Path, kernel, args) -> None:
    import torch

    if args.chunks is not None and args.chunks < 1:
        raise CLIError(f"--chunks must be positive, but got {args.chunks}")
    check_streaming_output(inp, out, args.force)
    from .workspace import _address_space_left

    source, native = open_source(inp)
    left = _address_space_left()
    # under a tight address-space cap (prlimit --as 1 GiB leaves ~270 MiB after torch's
    # import) smaller chunks: a chunk's float64 copies are what a worker holds
    chunks = chunk_shape(native, args.chunks, 512 if left is not None and left < 1 << 30
                         else 1024)
    options = dict(kernel=kernel, border=args.border,
                   output="same" if args.dtype == "same" else "float",
                   dtype={"float32": torch.float32, "float64": torch.float64}.get(args.dtype))
    if args.scheduler in (None, "threads"):
        dtype = _run_threads(source, out, chunks, options, left)
    else:
        dtype = _run_dask(source, out, chunks, options, args.scheduler)
    print(f"filtered {inp} ({'x'.join(map(str, source.shape))} {np.dtype(source.dtype)}) "
          f"into {out} ({dtype})", file=sys.stderr)
