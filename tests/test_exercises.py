"""docs/exercises.md is executable: its python blocks run in order and assert, and each text
block after a python block is exactly what that block prints."""

import contextlib
import io
import pathlib
import re

import pytest
import torch

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "exercises.md"
FENCE = re.compile(r"^```(python|text)\n(.*?)^```\n", re.S | re.M)


def blocks(text):
    """[(python source, expected output or None)] in document order."""
    found = [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]
    pairs = []
    for i, (kind, body) in enumerate(found):
        if kind == "python":
            nxt = found[i + 1] if i + 1 < len(found) else None
            pairs.append((body, nxt[1] if nxt and nxt[0] == "text" else None))
    return pairs


def run_all(text):
    """Execute every block; return [(expected, printed)]."""
    namespace, results = {"__name__": "exercises"}, []
    printopts = torch._tensor_str.PRINT_OPTS.__dict__.copy()
    try:
        for source, expected in blocks(text):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(source, str(DOC), "exec"), namespace)
            results.append((expected, out.getvalue()))
    finally:
        torch._tensor_str.PRINT_OPTS.__dict__.update(printopts)
    return results


@pytest.fixture(scope="module")
def executed():
    torch.manual_seed(0)
    return run_all(DOC.read_text())


def test_every_block_runs_and_asserts(executed):
    assert len(executed) >= 9
    sources = [src for src, _ in blocks(DOC.read_text())]
    assert all("assert" in src for src in sources), "every python block ends in asserts"


def test_printed_output_is_the_page(executed):
    for i, (expected, printed) in enumerate(executed):
        if expected is not None:
            assert printed == expected, (
                f"block {i}: the page shows\n{expected}\nbut it prints\n{printed}")


def write_outputs():  # pragma: no cover - maintenance helper: python tests/test_exercises.py
    text = DOC.read_text()
    outputs = iter(printed for expected, printed in run_all(text) if expected is not None)

    def fill(match):
        return match.group(0)

    pieces, last = [], 0
    found = list(FENCE.finditer(text))
    for i, m in enumerate(found):
        if m.group(1) == "text" and i and found[i - 1].group(1) == "python":
            pieces.append(text[last:m.start()])
            pieces.append(f"```text\n{next(outputs)}```\n")
            last = m.end()
    pieces.append(text[last:])
    DOC.write_text("".join(pieces))
    del fill


if __name__ == "__main__":  # pragma: no cover
    write_outputs()
