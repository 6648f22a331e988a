"""The ``convforge`` command: ``filter | fit | shape | bench | demo``.

Every failure a user can cause (missing, unreadable or corrupt file, unknown kernel,
malformed spec, existing output) is one line on stderr and exit status 1, never a
traceback. Outputs are written atomically (temporary file in the same folder, then
``os.replace``), never over the input, and an existing output is replaced only with
``--force``.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

import numpy as np

from .cli_io import (
    DISPLAY_RULE,
    IMAGE_FORMATS,
    READABLE,
    CLIError,
    check_output,
    load_kernel,
    one_line,
    read_image,
    to_display,
    write_atomic,
)
from .cli_shape import parse_axb

# --------------------------------------------------------------------------------------
# filter
# --------------------------------------------------------------------------------------

def _filter_one(inp: Path, out: Path, kernel, args) -> None:
    import torch

    from .filters import filter2d, resolve_layout

    img = read_image(inp)
    resp = filter2d(img, kernel, border=args.border, dtype=torch.float64)
    if out.suffix.lower() == ".npy":
        write_atomic(out, lambda fh: np.save(fh, resp))
        return
    from PIL import Image

    pic = to_display(resp, kernel, img, args.display)
    if pic.ndim == 3 and resolve_layout(pic.shape) == "CHW":
        pic = pic.transpose(1, 2, 0)
    if pic.ndim == 3 and pic.shape[2] == 1:
        pic = pic[..., 0]
    if pic.ndim == 3 and pic.shape[2] not in (3, 4):
        raise CLIError(f"{out}: {pic.shape[2]} channels cannot be stored as an image; use .npy")
    fmt = IMAGE_FORMATS[out.suffix.lower()]
    if fmt == "JPEG" and pic.ndim == 3 and pic.shape[2] == 4:
        pic = pic[..., :3]
    write_atomic(out, lambda fh: Image.fromarray(pic).save(fh, format=fmt))


def _cmd_filter(args) -> int:
    inp, out = Path(args.input), Path(args.output)
    if not inp.exists():
        raise CLIError(f"{inp}: no such file or directory")
    kernel = load_kernel(args.kernel)
    from .cli_stream import TIFF, ZARR, check_streaming_output, filter_streaming, wants_streaming

    if not inp.is_dir() or inp.suffix.lower() in ZARR:      # a .zarr store is a folder
        if wants_streaming(inp, out, args.chunks):
            filter_streaming(inp, out, kernel, args)
            return 0
        if args.scheduler is not None or args.dtype is not None:
            raise CLIError("--scheduler and --dtype apply to streamed runs (a .zarr IN or OUT, "
                           "a large TIFF, or --chunks)")
        check_output(inp, out, args.force)
        _filter_one(inp, out, kernel, args)
        return 0
    if out.suffix.lower() in ZARR:
        raise CLIError(f"{out}: a directory IN is filtered image by image into a directory "
                       f"OUT, not into a .zarr store")
    files = sorted(p for p in inp.iterdir() if p.is_file() and p.suffix.lower() in READABLE)
    if not files:
        raise CLIError(f"{inp}: no images ({', '.join(sorted(READABLE))}) in this directory")
    if out.exists() and (not out.is_dir() or out.resolve() == inp.resolve()):
        raise CLIError(f"{out}: must be a new or existing directory other than the input")
    ext = args.ext if args.ext is None or args.ext.startswith(".") else f".{args.ext}"
    targets = [out / (f.stem + (ext or f.suffix)) for f in files]
    if len(set(targets)) != len(targets):
        raise CLIError(f"{inp}: two inputs would write the same output name; use --ext")
    taken = [t for t in targets if t.exists()]
    if taken and not args.force:
        raise CLIError(f"{out}: {len(taken)} output file(s) exist already, e.g. {taken[0].name} "
                       f"(use --force to replace them)")
    out.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    failed = 0
    for f, t in tqdm(list(zip(files, targets)), desc="filter", unit="image", file=sys.stderr,
                     delay=1.0, leave=False):
        try:
            # a TIFF over 16 Mpixels (or any TIFF with --chunks) into a TIFF streams,
            # the others are filtered in memory
            if (f.suffix.lower() in TIFF and t.suffix.lower() in TIFF
                    and wants_streaming(f, t, args.chunks)):
                check_streaming_output(f, t, args.force)
                filter_streaming(f, t, kernel, args)
                continue
            check_output(f, t, args.force)
            _filter_one(f, t, kernel, args)
        except (CLIError, ValueError, TypeError, OSError, RuntimeError) as exc:
            failed += 1
            print(f"convforge filter: error: {f.name}: {one_line(exc)}", file=sys.stderr)
    print(f"filtered {len(files) - failed} of {len(files)} images into {out}", file=sys.stderr)
    return 1 if failed else 0


# --------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------

def _parse_size(text: str) -> tuple[int, int]:
    size = parse_axb(text, 1)
    if size is None:
        raise CLIError(f"--size must be KHxKW with positive integers (e.g. 3x3), but got {text!r}")
    return size


def _gray(path, a):
    if a.ndim != 2:
        raise CLIError(f"{path}: fit needs a grayscale (2D) image, but got shape {a.shape}")
    return a.astype(np.float64)


def _cmd_fit(args) -> int:
    import torch

    kh, kw = _parse_size(args.size)
    x = _gray(args.X, read_image(args.X))
    y = _gray(args.Y, read_image(args.Y))
    h, w = x.shape
    if y.shape == x.shape:                         # a same-size response: keep its valid part
        ah, aw = kh // 2, kw // 2
        y = y[ah:h - (kh - 1 - ah), aw:w - (kw - 1 - aw)]
    if y.shape != (h - kh + 1, w - kw + 1):
        raise CLIError(f"Y must have X's shape {x.shape} or the valid shape "
                       f"{(h - kh + 1, w - kw + 1)} for a {kh}x{kw} kernel, but got {y.shape}")
    from .fit import fit_kernel

    kwargs = {} if args.steps is None else {"steps": args.steps}
    res = fit_kernel(torch.from_numpy(x), torch.from_numpy(y), (kh, kw), bias=args.bias,
                     method=args.method, **kwargs)
    weight = res.weight.detach().cpu().numpy() + 0.0          # + 0.0: no "-0." printed
    print(f"learned {kh}x{kw} kernel ({res.method}):")
    print(np.array2string(weight, precision=6, suppress_small=True))
    if res.bias is not None:
        print(f"bias: {np.array2string(res.bias.detach().cpu().numpy(), precision=6)}")
    losses = res.loss if isinstance(res.loss, (list, tuple)) else [res.loss]
    print(f"loss (sum of squared errors): {float(losses[-1]):.6g}"
          + (f" after {res.steps} steps, from {float(losses[0]):.6g}" if len(losses) > 1 else ""))
    if args.save:
        target = Path(args.save)
        check_output(Path(args.X), target, args.force)
        write_atomic(target, lambda fh: np.save(fh, weight))
        print(f"kernel saved to {target}")
    return 0


# --------------------------------------------------------------------------------------
# bench
# --------------------------------------------------------------------------------------

def _cmd_warmup(args) -> int:
    import torch

    from ._compile import COMPILED, warmup

    dtypes = [getattr(torch, d) for d in args.dtype] if args.dtype else None
    names = args.algorithm or list(COMPILED)
    bad = [n for n in names if n not in COMPILED]
    if bad:
        raise CLIError(f"--algorithm must be one of {list(COMPILED)} (the compiled ones), "
                       f"but got {bad[0]!r}")
    done = warmup(names, **({} if dtypes is None else {"dtypes": dtypes}),
                  progress=not args.no_progress)
    for name, dtype, seconds in done:
        print(f"{name:10s} {dtype:8s} {seconds:6.1f} s")
    total = len(names) * len(dtypes or (torch.float32, torch.float64))
    print(f"ready: {', '.join(names)} ({len(done)} of {total} kernel sets compiled or "
          f"loaded now)")
    return 0


def _cmd_dispatch(args) -> int:
    from . import dispatch

    print(dispatch.report())
    return 0


def _cmd_bench(args) -> int:
    import runpy

    import convforge

    script = Path(convforge.__file__).resolve().parents[2] / "benchmarks" / "run.py"
    if not script.is_file():
        raise CLIError(f"the benchmark suite is not here ({script} not found): it ships with "
                       f"the source repository, not with an installed package")
    main = runpy.run_path(str(script), run_name="convforge_bench").get("main")
    if not callable(main):
        raise CLIError(f"{script}: defines no main(argv)")
    return int(main(list(args.rest)) or 0)


# --------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------

def _cmd_demo(args) -> int:
    from . import photo
    from .chapter import print_walkthrough

    out = Path(args.out) if args.out else None
    if out is not None:
        if out.exists() and not out.is_dir():
            raise CLIError(f"{out}: exists and is not a directory")
        taken = [name for name in photo.FIGURES if (out / name).exists()]
        if taken and not args.force:
            raise CLIError(f"{out}: {taken[0]} exists already (use --force to replace figures)")
    print("convforge demo: the convolution chapter, computed by convforge")
    print_walkthrough()
    try:
        sections, figures = photo.walkthrough()
    except photo.MissingDependency as exc:
        print(f"\n(the photograph chapter is skipped: {exc})")
        return 0
    for title, text in sections:
        print(f"\n== {title} ==\n{text}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for name, make in figures.items():
            photo.save_figure(make(), out / name)
        print(f"\nfigures written to {out}: {', '.join(figures)}")
    return 0


# --------------------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------------------

def _sub(sub, name, help_, description, examples):
    paragraphs = description.split("\n\n")          # wrap paragraphs without their own breaks
    description = "\n\n".join(p if "\n" in p else textwrap.fill(p, 88) for p in paragraphs)
    return sub.add_parser(name, help=help_, description=description,
                          epilog="examples:\n  " + "\n  ".join(examples),
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    from .cli_shape import add_shape_parser

    parser = argparse.ArgumentParser(
        prog="convforge", description="Convolutions you can see and trust.",
        epilog="run `convforge COMMAND --help` for each command's options and examples")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _sub(sub, "filter", "filter an image (or a folder of images) with a kernel",
             "Correlate IN with a kernel (convforge.filter2d, OpenCV's filter2D semantics)\n"
             "and write OUT. IN: PNG/JPEG/TIFF/BMP (grayscale or RGB) or .npy; a directory IN\n"
             "filters every image in it into the directory OUT (created; its large TIFFs\n"
             "streamed, or all its TIFFs with --chunks). A .zarr IN or\n"
             "OUT, a TIFF IN over 16 Mpixels, or --chunks streams: the image is read, filtered\n"
             "and written chunk by chunk (each input chunk read once; through dask with\n"
             "--scheduler processes or ADDRESS), OUT a .zarr store or a tiled BigTIFF.\n"
             "SPEC: a zoo name with options (sobel-x, laplacian:8, gaussian:sigma=2, box:5;\n"
             "all names: python -c 'import convforge; print(convforge.kernels.names())'),\n"
             "an inline matrix (\"[[1,-1]]\"), or a .npy/.txt/.csv file.\n\n"
             + DISPLAY_RULE,
             ["convforge filter camera.png edges.png --kernel sobel-x",
              "convforge filter camera.png gx.npy --kernel sobel-x   "
              "# == cv2.Sobel(img, CV_64F, 1, 0)",
              "convforge filter photo.jpg soft.png --kernel gaussian:sigma=2 --border replicate",
              "convforge filter in.png out.png --kernel \"[[1,-1]]\" --force",
              "convforge filter photos/ edges/ --kernel laplacian:8 --ext .png",
              "convforge filter slide.tif edges.zarr --kernel sobel-x --chunks 2048  "
              "# larger than memory",
              "convforge filter scan.zarr soft.tif --kernel gaussian:sigma=3 --dtype same "
              "--scheduler tcp://10.0.0.5:8786"])
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    p.add_argument("--kernel", "-k", required=True, metavar="SPEC")
    p.add_argument("--border", default="reflect",
                   choices=["reflect", "zeros", "constant", "replicate", "circular",
                            "symmetric"],
                   help="border mode (default reflect = OpenCV's BORDER_REFLECT_101)")
    p.add_argument("--display", default="auto", choices=["auto", "signed", "abs", "clip"],
                   help="8-bit mapping for image outputs (see above)")
    p.add_argument("--ext", help="output extension for a directory IN (default: each input's)")
    p.add_argument("--force", action="store_true", help="replace existing outputs")
    p.add_argument("--chunks", type=int, metavar="N",
                   help="stream in N x N chunks (default: a Zarr's or tiled TIFF's own "
                        "chunks near 1024, else 1024; 512 under a tight address-space cap)")
    p.add_argument("--scheduler", metavar="threads|processes|ADDRESS",
                   help="where a streamed run computes: threads (default: convforge's "
                        "threaded engine), processes (dask's process pool) or the ADDRESS of "
                        "a running dask.distributed scheduler, e.g. tcp://host:8786")
    p.add_argument("--dtype", choices=["float32", "float64", "same"],
                   help="streamed output dtype (default float32, float64 for float64 "
                        "input; same: the input's, rounded and saturated)")
    p.set_defaults(func=_cmd_filter)

    p = _sub(sub, "fit", "learn the kernel that maps one image to another",
             "Find the KHxKW kernel (and bias) with Y = corr2d(X, K) (+ b), by exact least "
             "squares or gradient descent (convforge.fit_kernel). Y may have X's size (its "
             "valid part is used, kernel centred as in `convforge filter`) or the valid size. "
             "Use .npy files for exact values.",
             ["convforge filter camera.png gx.npy --kernel sobel-x",
              "convforge fit camera.png gx.npy --size 3x3",
              "convforge fit x.npy y.npy --size 1x2 --method gd --steps 200 --save k.npy"])
    p.add_argument("X")
    p.add_argument("Y")
    p.add_argument("--size", required=True, metavar="KHxKW")
    p.add_argument("--bias", action="store_true", help="also fit a bias")
    p.add_argument("--method", default="lstsq", choices=["lstsq", "gd"])
    p.add_argument("--steps", type=int, help="most gradient-descent steps")
    p.add_argument("--save", metavar="PATH.npy", help="write the learned kernel (.npy)")
    p.add_argument("--force", action="store_true", help="replace an existing --save file")
    p.set_defaults(func=_cmd_fit)

    add_shape_parser(sub, _sub)

    p = _sub(sub, "bench", "run the benchmark suite (benchmarks/run.py)",
             "Run the repository's benchmark suite; arguments after `bench` go to it "
             "(use `convforge bench -- --help` for its own help).",
             ["convforge bench --quick", "convforge bench --quick --json results.json"])
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_bench)

    p = _sub(sub, "dispatch", "show how well auto chooses algorithms on this machine",
             "Print the shipped cost-model fits (one per torch thread count: when fitted, on "
             "how many shapes, how often auto's choice is within 10% of the fastest, "
             "in-sample and leave-one-out) and each algorithm's measured error against "
             "float64. Re-fit with benchmarks/fit_cost_model.py.",
             ["convforge dispatch"])
    p.set_defaults(func=_cmd_dispatch)

    p = _sub(sub, "warmup", "compile the compiled algorithms' kernels now",
             "Compile (or load from Numba's cache) the kernels of direct, depthwise, winograd "
             "and im2col's col2im for every code path, so that no later call waits for them. "
             "With an empty cache this takes about a minute per dtype; Numba keeps the result "
             "on disk (next to the package, or in a per-user cache directory when that is "
             "read-only, or in NUMBA_CACHE_DIR), so a later process only loads it. Without "
             "it, \"auto\" uses the other algorithms until a background thread has compiled "
             "these.",
             ["convforge warmup", "convforge warmup --algorithm direct --dtype float32"])
    p.add_argument("--algorithm", action="append", metavar="NAME",
                   help="only this algorithm (repeatable)")
    p.add_argument("--dtype", action="append", choices=["float32", "float64"],
                   help="only this dtype (repeatable; default both)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_warmup)

    p = _sub(sub, "demo", "walk through the convolution chapter, then on a real photo",
             "Print the chapter's results (corr2d, edges, learning a kernel, padding/stride "
             "shapes, channels, 1x1 convolution), then the same ideas on scikit-image's "
             "camera photograph: vertical, horizontal and diagonal edges, transposing, "
             "padding and stride, and a kernel learned back from its output. With --out, "
             "also write PNG figures there.",
             ["convforge demo", "convforge demo --out figures/"])
    p.add_argument("--out", metavar="DIR", help="write PNG figures into DIR (created)")
    p.add_argument("--force", action="store_true", help="replace existing figures in DIR")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``convforge`` command; returns the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "bench":
        args.rest = [a for a in extra + list(args.rest) if a != "--"]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    elif args.command == "bench":
        args.rest = [a for a in args.rest if a != "--"]
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"convforge {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure is one line, never a traceback
        if os.environ.get("CONVFORGE_DEBUG"):
            raise
        message = one_line(exc).removeprefix(f"{args.command}: ")
        print(f"convforge {args.command}: error: {message}", file=sys.stderr)
        return 1


def run() -> int:
    """The console script: :func:`main`, then the objects made so far frozen out of the
    interpreter's last cyclic collection (it would scan torch's ~200k objects at exit,
    ~0.3 s; they are released as the interpreter shuts down all the same)."""
    import gc

    code = main()
    gc.freeze()
    return code


if __name__ == "__main__":
    raise SystemExit(run())
