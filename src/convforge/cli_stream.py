"""``convforge filter`` for images larger than memory: Zarr and (Big)TIFF in and out, chunk
by chunk through dask (:mod:`convforge.bigimage`). A .zarr IN or OUT, ``--chunks``, or a
TIFF of more than 16 Mpixels written to TIFF streams. A streamed run starts no background
compilation: it plans with the kernels that need none (torch's, ``fft``, ``shift``; the
compiled ones too if this process has them already), keeping Numba's ~110 MiB out of it.

The input is opened lazily (a memory-mapped TIFF, a tiled TIFF through tifffile's Zarr
view, or a Zarr array), filtered as a dask array, and written band by band (one row of
chunks at a time, the chunks of a band computed in parallel) with a progress bar: memory
holds a band, not the image. The output is written under a temporary name in OUT's folder
and renamed onto OUT only once complete; an interrupted or failed run removes it, so OUT
is never a partial result (an existing OUT, replaced with ``--force``, stays until the new
one is complete).
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
STREAM_WORKSPACE = 16 << 20
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


def _require():
    try:
        import dask.array as da
        import tifffile
        import zarr
    except ImportError:
        raise CLIError("streaming Zarr/TIFF files needs dask, zarr and tifffile: "
                       "pip install convforge[dask]") from None
    return da, zarr, tifffile


class TiffRegions:
    """A TIFF read region by region, for ``dask.array.from_array``: each read opens the
    file (reading just the region's rows when the data is contiguous, else through
    tifffile's Zarr view of its tiles or strips), so the object pickles as a path and runs
    on process and distributed workers."""

    def __init__(self, path):
        import tifffile

        self.path = str(path)
        with tifffile.TiffFile(self.path) as tif:
            series = tif.series[0]
            self.shape, self.dtype = tuple(series.shape), np.dtype(series.dtype)
            self.offset = series.dataoffset
        self.ndim = len(self.shape)

    def __getitem__(self, key):
        import tifffile
        import zarr

        if self.offset is not None:                    # contiguous: read the rows only
            rows = key[0] if isinstance(key, tuple) else key
            start, stop, _ = rows.indices(self.shape[0]) if isinstance(rows, slice) else \
                (0, self.shape[0], 1)
            pitch = int(np.prod(self.shape[1:])) * self.dtype.itemsize
            with open(self.path, "rb") as f:
                f.seek(self.offset + start * pitch)
                data = np.fromfile(f, self.dtype, max(0, stop - start) * pitch
                                   // self.dtype.itemsize)
            data = data.reshape((max(0, stop - start),) + self.shape[1:])
            rest = key[1:] if isinstance(key, tuple) else ()
            return data[(slice(None),) + tuple(rest)]
        with tifffile.TiffFile(self.path) as tif:
            return np.asarray(zarr.open(tif.aszarr(), mode="r")[key])


def open_lazy(path: Path, chunks: int):
    """The image at ``path`` as a dask array of ``chunks`` x ``chunks`` spatial chunks."""
    da, zarr, tifffile = _require()
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
        elif suffix in TIFF:
            arr = TiffRegions(path)
        else:
            raise CLIError(f"{path}: streaming reads .zarr and .tif/.tiff, not {suffix!r}")
    except CLIError:
        raise
    except Exception as exc:                              # noqa: BLE001 - one line
        raise CLIError(f"{path}: cannot open: {exc}") from None
    if len(arr.shape) not in (2, 3):
        raise CLIError(f"{path}: expected an (H, W) or (H, W, C) image, but got shape "
                       f"{tuple(arr.shape)}")
    spatial = (chunks, chunks) + ((-1,) if len(arr.shape) == 3 else ())
    return da.from_array(arr, chunks=spatial, lock=False, asarray=True)


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


def _bands(result, band_rows):
    h = result.shape[0]
    return [(r, min(h, r + band_rows)) for r in range(0, h, band_rows)]


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


def write(result, out: Path, chunks: int) -> None:
    """Compute ``result`` band by band into ``out`` (.zarr or .tif), atomically."""
    da, zarr, tifffile = _require()
    tmp = _temporary(out)
    _remove(tmp)
    bands = _bands(result, result.chunksize[0])
    try:
        if out.suffix.lower() in ZARR:
            z = zarr.open(str(tmp), mode="w", shape=result.shape, dtype=result.dtype,
                          chunks=tuple(min(chunks, s) for s in result.shape[:2])
                          + result.shape[2:])
            width = result.chunksize[1] * _BLOCK_CHUNKS
            with _progress(len(bands), "filter") as bar:
                for r0, r1 in bands:             # each chunk written as soon as computed
                    for c0 in range(0, result.shape[1], width):   # a few chunks at a time
                        c1 = min(result.shape[1], c0 + width)
                        region = (slice(r0, r1), slice(c0, c1)) + (slice(None),) * (
                            result.ndim - 2)
                        da.store(result[region], z, regions=region, lock=False)
                    bar.update()
        else:
            side = max(16, min(256, chunks // 16 * 16))    # TIFF tiles: multiples of 16
            tile = (side, side)

            rows = _bands(result, tile[0] * max(1, chunks // tile[0]))

            def tiles():                      # tifffile takes the tiles in row-major order
                with _progress(len(rows), "filter") as bar:
                    for r0, r1 in rows:
                        band = result[r0:r1].compute()
                        for t in range(0, r1 - r0, tile[0]):
                            for c in range(0, result.shape[1], tile[1]):
                                yield np.ascontiguousarray(band[t:t + tile[0], c:c + tile[1]])
                        bar.update()

            photometric = "rgb" if result.ndim == 3 and result.shape[2] in (3, 4) else None
            tifffile.imwrite(tmp, tiles(), shape=result.shape, dtype=result.dtype, tile=tile,
                             bigtiff=True, photometric=photometric or "minisblack",
                             planarconfig="contig" if result.ndim == 3 else None)
        _publish(tmp, out)
    except BaseException:
        _remove(tmp)
        raise


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


def _fewer_arenas_under_a_cap() -> None:
    """Under an address-space cap (``prlimit --as``), glibc's malloc shares two arenas
    between all threads: each thread's own arena reserves 64 MiB of address space, which a
    few worker threads would spend before any image data (``M_ARENA_MAX``)."""
    from .workspace import _address_space_left

    if _address_space_left() is None:
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, 2)            # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def filter_streaming(inp: Path, out: Path, kernel, args) -> None:
    """``convforge filter`` of a large image: lazily read, filtered per chunk, written
    band by band."""
    from . import _compile, workspace

    _fewer_arenas_under_a_cap()
    before = workspace._STATE["limit"]
    # a chunk's own work is small: tiles of at most 16 MiB of workspace per call keep a
    # streamed run's memory near its chunks' (measured: 8192^2 with 15x15, 529 -> 473 MiB
    # peak RSS, no slower)
    workspace.set_workspace_limit(min(workspace.get_workspace_limit(), STREAM_WORKSPACE))
    try:
        with _compile.no_background():   # no Numba (~110 MiB) loaded mid-run
            _filter_streaming(inp, out, kernel, args)
    finally:
        workspace._STATE["limit"] = before


def _filter_streaming(inp: Path, out: Path, kernel, args) -> None:
    import torch

    from .filters import filter2d

    chunks = args.chunks or 1024
    if chunks < 1:
        raise CLIError(f"--chunks must be positive, but got {chunks}")
    check_streaming_output(inp, out, args.force)
    image = open_lazy(inp, chunks)
    layout = "HW" if image.ndim == 2 else "HWC"
    output = "same" if args.dtype == "same" else "float"
    dtype = {"float32": torch.float32, "float64": torch.float64}.get(args.dtype)
    result = filter2d(image, kernel, border=args.border, output=output, layout=layout,
                      dtype=dtype)
    with scheduler(args.scheduler):
        write(result, out, chunks)
    print(f"filtered {inp} ({'x'.join(map(str, image.shape))} {image.dtype}) into {out} "
          f"({result.dtype})", file=sys.stderr)
