"""Files in and out for the ``convforge`` command: images, kernels, atomic writes.

Images: PNG/JPEG/TIFF/BMP through Pillow (grayscale stays ``(H, W)``, 16-bit and float TIFFs
keep their dtype, palette / alpha images become RGB ``(H, W, 3)``), or ``.npy`` through
numpy without pickles. Writes go to a temporary file in the target's folder, renamed into
place with :func:`os.replace`, so a failure never leaves a partial file.
"""

from __future__ import annotations

import ast
import os
import tempfile
from pathlib import Path

import numpy as np

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF",
                 ".tiff": "TIFF", ".bmp": "BMP"}
READABLE = frozenset(IMAGE_FORMATS) | {".npy"}
DISPLAY_RULE = """\
image outputs (PNG/JPEG/TIFF/BMP) hold a displayable 8-bit picture of the response r:
  --display auto    (default) 'signed' for kernels summing to 0 (edges, derivatives,
                    Laplacian), else 'clip'
  --display signed  128 + 127 * r / max|r|: mid-grey is 0, white positive, black negative
  --display abs     255 * |r| / max|r|: edge strength
  --display clip    r on the input's 8-bit scale (uint16 / 257, floats in [0, 1] * 255),
                    rounded half to even and saturated to 0..255, as OpenCV does
.npy outputs keep the float64 response exactly."""


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


# --------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------

def read_image(path) -> np.ndarray:
    """PNG/JPEG/TIFF/BMP (grayscale -> (H, W), colour -> (H, W, 3)) or .npy, as an array."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in READABLE:
        raise CLIError(f"{path}: unsupported input type {ext or '(none)'!r}; "
                       f"use one of {sorted(READABLE)}")
    if not path.is_file():
        raise CLIError(f"{path}: no such file")
    if ext == ".npy":
        try:
            a = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise CLIError(f"{path}: not a readable .npy array ({one_line(exc)})") from None
        if not isinstance(a, np.ndarray) or a.ndim not in (2, 3) or a.dtype.kind not in "uif":
            raise CLIError(f"{path}: expected a 2D or 3D numeric array, but got "
                           f"{getattr(a, 'shape', '?')} {getattr(a, 'dtype', '')}")
        return a
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("L", "I;16", "I;16B", "I;16L", "I", "F"):
                return np.array(im)
            return np.array(im.convert("L" if im.mode in ("1", "LA") else "RGB"))
    except (OSError, ValueError, SyntaxError) as exc:   # UnidentifiedImageError is an OSError
        raise CLIError(f"{path}: cannot read image ({one_line(exc)})") from None


def write_atomic(path, write) -> None:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then rename it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        mask = os.umask(0o022)                      # mkstemp makes 0600; honour the umask
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_output(inp: Path, out: Path, force: bool) -> None:
    """Refuse to write over ``inp``, over an existing ``out`` without ``force``, into a
    missing folder, or with an unknown extension (raises :class:`CLIError`)."""
    if out.exists() and inp.exists() and out.resolve() == inp.resolve():
        raise CLIError(f"{out}: refusing to write over the input")
    if out.is_dir():
        raise CLIError(f"{out}: is a directory (give a file name)")
    if out.exists() and not force:
        raise CLIError(f"{out}: exists already (use --force to replace it)")
    if not out.parent.is_dir():
        raise CLIError(f"{out.parent}: no such directory")
    if out.suffix.lower() not in READABLE:
        raise CLIError(f"{out}: unsupported output type {out.suffix or '(none)'!r}; "
                       f"use one of {sorted(READABLE)}")


def one_line(exc) -> str:
    """An exception's message on one line (whitespace runs collapsed)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def load_kernel(spec: str) -> np.ndarray:
    """A zoo spec (``sobel-x``, ``gaussian:sigma=2``), an inline matrix or a .npy/.txt file.

    Inline matrices are parsed with :func:`ast.literal_eval` (never ``eval``); a flat list is
    one row. Returns a float64 array; raises :class:`CLIError` with a one-line reason.

    Example:
        >>> load_kernel("[1, -1]")
        array([[ 1., -1.]])
    """
    import torch

    from . import kernels

    text = spec.strip()
    if text.lower().endswith((".npy", ".txt", ".csv")):
        path = Path(text)
        if not path.is_file():
            raise CLIError(f"kernel file {path}: no such file")
        try:
            k = (np.load(path, allow_pickle=False) if path.suffix.lower() == ".npy"
                 else np.loadtxt(path, ndmin=2, delimiter="," if text.endswith(".csv") else None))
        except (ValueError, OSError, EOFError) as exc:
            raise CLIError(f"kernel file {path}: cannot read it ({one_line(exc)})") from None
    elif text.startswith("["):
        try:
            k = np.array(ast.literal_eval(text), dtype=np.float64)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise CLIError(f"kernel {spec!r}: malformed matrix; write e.g. \"[[1,-1]]\"") from None
    else:
        try:
            k = kernels.get(text, dtype=torch.float64).numpy()
        except ValueError as exc:
            raise CLIError(f"{one_line(exc)} (see `convforge filter --help`)") from None
    k = np.atleast_2d(np.asarray(k))
    if k.dtype.kind not in "uif" or k.ndim not in (2, 3) or k.size == 0:
        raise CLIError(f"kernel {spec!r}: must be a non-empty numeric (kH, kW) or (C, kH, kW) "
                       f"matrix, but got shape {k.shape}")
    if not np.all(np.isfinite(k)):
        raise CLIError(f"kernel {spec!r}: must hold finite numbers")
    return k.astype(np.float64)


def to_display(response: np.ndarray, kernel: np.ndarray, source: np.ndarray,
               display: str = "auto") -> np.ndarray:
    """The 8-bit picture of a response (the rule in :data:`DISPLAY_RULE`).

    Example:
        >>> to_display(np.array([[-2.0, 0.0, 1.0]]), np.array([[1.0, -1.0]]), np.zeros(1))
        array([[  1, 128, 192]], dtype=uint8)
    """
    r = np.asarray(response, dtype=np.float64)
    if display == "auto":
        display = "signed" if abs(kernel.sum()) <= 1e-9 * np.abs(kernel).sum() else "clip"
    m = float(np.abs(r).max()) if r.size else 0.0
    if display == "signed":
        out = 128.0 + 127.0 * r / m if m > 0 else np.full_like(r, 128.0)
    elif display == "abs":
        out = 255.0 * np.abs(r) / m if m > 0 else np.zeros_like(r)
    elif display == "clip":
        if source.dtype.kind in "ui":
            scale = 255.0 / np.iinfo(source.dtype).max if source.dtype != np.uint8 else 1.0
        else:
            scale = 255.0 if source.size and float(np.abs(source).max()) <= 1.0 else 1.0
        out = r * scale
    else:
        raise CLIError(f"--display must be auto, signed, abs or clip, but got {display!r}")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
