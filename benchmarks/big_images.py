"""Images larger than memory (issue 11): convforge through dask against dask-image.

On a 16384 x 16384 float32 image (1 GiB) stored as Zarr in 1024 x 1024 chunks, with 5x5 and
15x15 kernels and the reflect border (OpenCV's BORDER_REFLECT_101 = scipy.ndimage's
"mirror"), each in a fresh process, one row of chunks at a time into a Zarr output:

* ``convforge CLI``: ``convforge filter in.zarr out.zarr --kernel k.npy`` (the default
  threaded engine, :func:`convforge.stream.filter_chunks`: each input chunk read once);
* ``dask-image``: ``dask_image.ndfilters.correlate(x, k, mode="mirror")`` on the same
  chunks, stored one row of chunks at a time (threads);
* ``convforge distributed``: ``convforge.filter2d`` of the dask array on a
  ``dask.distributed.LocalCluster`` with 2 worker processes (the client's own peak RSS;
  the workers' are their own);

then the in-memory ``convforge.filter2d`` of the whole image (2 GiB in and out) is the
reference every output is compared with (max |diff| / max |ref|). Peak RSS is the
process's ``ru_maxrss``. The CLI and dask-image rows run ``--repeat`` times (default 3,
alternating) and report the median time and the largest peak; ``x dask-image`` = median /
dask-image's median (the distributed row runs once). Last, a 12000 x 12000 uint8 TIFF
through ``convforge filter`` under ``prlimit --as=1GiB`` (address-space cap), its output
compared with the in-memory filter2d (uint8, bit for bit).

Usage::

    python benchmarks/big_images.py [--quick] [--repeat N] [--json PATH] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

_MEASURED = textwrap.dedent("""
    import json, resource, subprocess, sys, time
    t0 = time.perf_counter()
    done = subprocess.run(json.loads(sys.argv[1]), capture_output=True, text=True)
    print(json.dumps(dict(rc=done.returncode, seconds=time.perf_counter() - t0,
                          peak=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
                          err=done.stderr[-400:], out=done.stdout[-400:])))
""")

_DASK_IMAGE = textwrap.dedent("""
    import sys, numpy as np, dask, dask.array as da, zarr
    from dask_image import ndfilters
    src, kernel, dst = sys.argv[1:4]
    x = da.from_zarr(src)
    k = np.load(kernel)
    y = ndfilters.correlate(x, k, mode="mirror")
    z = zarr.open(dst, mode="w", shape=y.shape, dtype=y.dtype, chunks=x.chunksize)
    with dask.config.set(scheduler="threads"):
        for r in range(0, y.shape[0], x.chunksize[0]):
            z[r:r + x.chunksize[0]] = y[r:r + x.chunksize[0]].compute()
""")

_DISTRIBUTED = textwrap.dedent("""
    import sys, numpy as np, dask.array as da, zarr
    from distributed import Client, LocalCluster
    import convforge
    src, kernel, dst = sys.argv[1:4]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        x = da.from_zarr(src)
        y = convforge.filter2d(x, np.load(kernel), border="reflect")
        z = zarr.open(dst, mode="w", shape=y.shape, dtype=y.dtype, chunks=x.chunksize)
        for r in range(0, y.shape[0], x.chunksize[0]):     # the workers write the chunks
            band = (slice(r, r + x.chunksize[0]), slice(None))
            da.store(y[band], z, regions=band, lock=False)
""")

_COMPARE = textwrap.dedent("""
    import json, sys, numpy as np, zarr
    import convforge
    src, kernel, outs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    img = zarr.open(src, mode="r")[:]
    ref = convforge.filter2d(img, np.load(kernel), border="reflect")
    del img
    scale = float(np.abs(ref).max())
    errs = {}
    for name, path in outs.items():
        z = zarr.open(path, mode="r")
        err = 0.0
        for r in range(0, ref.shape[0], 1024):
            err = max(err, float(np.abs(z[r:r + 1024].astype(np.float64)
                                        - ref[r:r + 1024]).max()))
        errs[name] = err / scale
    print(json.dumps(errs))
""")


def _run(cmd, env=None, cap=None):
    """Run ``cmd`` (a list) in a fresh process; its rc, seconds and peak RSS."""
    full = [PY, "-c", _MEASURED, json.dumps(cmd)]
    if cap:
        full = ["prlimit", f"--as={cap}"] + full
    done = subprocess.run(full, capture_output=True, text=True, env=env, cwd=ROOT)
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return dict(rc=done.returncode, seconds=float("nan"), peak=0, err=done.stderr[-400:])


def _median(results):
    """One row of several runs: the median time, the largest peak, every time."""
    good = [r for r in results if r["rc"] == 0]
    if not good:
        return results[-1]
    return dict(good[-1], seconds=statistics.median(r["seconds"] for r in good),
                peak=max(r["peak"] for r in good), each=[r["seconds"] for r in results])


_TIFF_CHECK = textwrap.dedent("""
    import sys, numpy as np, tifffile, convforge
    a = tifffile.imread(sys.argv[1])
    ref = convforge.filter2d(a, convforge.kernels.get("box:5"), output="same")
    print(int(np.array_equal(tifffile.imread(sys.argv[2]), ref)))
""")


def _tiff_agrees(src, out, env) -> bool:
    done = subprocess.run([PY, "-c", _TIFF_CHECK, str(src), str(out)], capture_output=True,
                          text=True, env=env, cwd=ROOT)
    return done.returncode == 0 and done.stdout.strip().endswith("1")


def _make_zarr(path, side, chunk):
    import zarr

    z = zarr.open(str(path), mode="w", shape=(side, side), dtype=np.float32,
                  chunks=(chunk, chunk))
    rng = np.random.default_rng(0)
    for r in range(0, side, chunk):
        z[r:r + chunk] = rng.standard_normal((min(chunk, side - r), side), np.float32)


def _make_tiff(path, side):
    import tifffile

    rng = np.random.default_rng(1)
    data = tifffile.memmap(str(path), shape=(side, side), dtype=np.uint8, bigtiff=True)
    for r in range(0, side, 1000):
        data[r:r + 1000] = rng.integers(0, 256, (min(1000, side - r), side), dtype=np.uint8)
    data.flush()
    del data


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 2048^2 image, seconds")
    parser.add_argument("--json", metavar="PATH", help="write the rows as JSON")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep the files")
    parser.add_argument("--repeat", type=int, default=None,
                        help="runs of the CLI and dask-image rows (default 3, 1 with --quick)")
    args = parser.parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 3)
    side, chunk, tiff_side = (2048, 256, 1500) if args.quick else (16384, 1024, 12000)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="cf-big-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="2")
    rows, bad = [], []
    try:
        src = work / "in.zarr"
        t0 = time.perf_counter()
        _make_zarr(src, side, chunk)
        print(f"{side}x{side} float32 Zarr, {chunk}x{chunk} chunks, written in "
              f"{time.perf_counter() - t0:.1f} s; 2 threads", flush=True)
        head = (f"{'kernel':7s} {'implementation':24s} {'seconds':>8s} {'peak MiB':>9s} "
                f"{'x dask-image':>13s} {'rel. error':>11s}")
        print(head)
        print("-" * len(head))
        for size in (5,) if args.quick else (5, 15):
            kernel = work / f"k{size}.npy"
            np.save(kernel, np.random.default_rng(size).standard_normal((size, size)))
            outs = {name: work / f"{name}-{size}.zarr" for name in ("cli", "daskimage", "dist")}
            commands = {
                "convforge CLI": [PY, "-m", "convforge.cli", "filter", str(src),
                                  str(outs["cli"]), "--kernel", str(kernel), "--chunks",
                                  str(chunk), "--force"],
                "dask-image": [PY, "-c", _DASK_IMAGE, str(src), str(kernel),
                               str(outs["daskimage"])],
            }
            runs = {label: [] for label in commands}
            for _ in range(repeat):                  # alternating: both see the same noise
                for label, cmd in commands.items():
                    runs[label].append(_run(cmd, env))
            results = {label: _median(rs) for label, rs in runs.items()}
            results["convforge distributed"] = _run([PY, "-c", _DISTRIBUTED, str(src),
                                                     str(kernel), str(outs["dist"])], env)
            names = {"convforge CLI": "cli", "dask-image": "daskimage",
                     "convforge distributed": "dist"}
            done = subprocess.run([PY, "-c", _COMPARE, str(src), str(kernel), json.dumps(
                {k: str(v) for k, v in outs.items() if v.exists()})], capture_output=True,
                text=True, env=env, cwd=ROOT)
            errors = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 \
                else {}
            base = results["dask-image"]["seconds"]
            for label, r in results.items():
                err = errors.get(names[label], float("nan"))
                ok = r["rc"] == 0 and err <= 1e-5
                each = " ".join(f"{x:.1f}" for x in r.get("each", []))
                print(f"{size}x{size:<4d} {label:24s} {r['seconds']:8.1f} "
                      f"{r['peak'] / 2**20:9.0f} {r['seconds'] / base:13.2f} {err:11.1e}"
                      + (f"  (runs: {each} s)" if len(r.get("each", [])) > 1 else "")
                      + ("" if ok else f"  FAILED: {r.get('err', '')[-200:]!r}"), flush=True)
                rows.append(dict(kernel=size, impl=label, seconds=r["seconds"],
                                 runs=r.get("each", [r["seconds"]]),
                                 peak_mib=r["peak"] / 2**20, x_dask_image=r["seconds"] / base,
                                 rel_error=err, ok=ok))
                if not ok and label != "dask-image":
                    bad.append(f"{size}/{label}")
            for path in outs.values():
                shutil.rmtree(path, ignore_errors=True)
        tiff = work / "big.tif"
        _make_tiff(tiff, tiff_side)
        extra = ["--chunks", "512"] if args.quick else []   # a small TIFF is not streamed
        print()
        for cap in (1 << 30, 5 << 28, 3 << 29):          # 1 GiB, then 1.25 and 1.5 GiB
            r = _run([PY, "-m", "convforge.cli", "filter", str(tiff), str(work / "out.tif"),
                      "--kernel", "box:5", "--dtype", "same", "--force"] + extra, env,
                     cap=cap)
            ok = r["rc"] == 0
            same = ok and _tiff_agrees(tiff, work / "out.tif", env)
            print(f"{tiff_side}x{tiff_side} uint8 TIFF through `convforge filter` under "
                  f"prlimit --as={cap / 2**30:.2f}GiB: {'completed' if ok else 'FAILED'} in "
                  f"{r['seconds']:.1f} s, peak RSS {r['peak'] / 2**20:.0f} MiB"
                  + (f"; output {'equals' if same else 'DIFFERS from'} the in-memory "
                     "filter2d" if ok else f": {r.get('err', '')[-160:]!r}"), flush=True)
            ok = ok and same
            rows.append(dict(kernel=5, impl=f"CLI uint8 TIFF, {cap / 2**30:.2f} GiB address "
                             f"space", seconds=r["seconds"], peak_mib=r["peak"] / 2**20, ok=ok))
            if ok:
                break
        else:
            bad.append("the TIFF under every cap")
        if not rows[-1]["impl"].startswith("CLI uint8 TIFF, 1.00") or not rows[-1]["ok"]:
            print("(the 1 GiB address-space goal is not met)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("all convforge runs agree with the in-memory filter" if not bad
          else "FAILED: " + ", ".join(bad))
    if args.json:
        write_json(args.json, rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
