"""The benchmark scripts: run.py --quick in-process, and the cost-model fit's maths."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_run_quick_prints_a_table_and_writes_json(tmp_path, capsys):
    run = _load("run")
    out = tmp_path / "r.json"
    assert run.main(["--quick", "--only", "dense64,img5", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "x torch" in text and "auto=" in text and "all results agree" in text
    data = json.loads(out.read_text())
    impls = {r["impl"] for r in data["results"]}
    assert {"torch", "torch_cl", "im2col", "winograd"} <= impls
    assert all(r["ok"] and r["ms"] > 0 for r in data["results"])
    assert {"fwd", "fwd+bwd"} == {r["pass_"] for r in data["results"]
                                  if r["workload"] == "dense64"}


def test_run_rejects_unknown_workload(capsys):
    run = _load("run")
    assert run.main(["--quick", "--only", "nope"]) == 2
    assert "--only takes names" in capsys.readouterr().err


def test_fit_recovers_known_weights_and_scores_choices():
    """Synthetic times that are exact combinations of the features: the NNLS fit finds the
    weights, and the in-sample choice is right on every shape."""
    fit = _load("fit_cost_model")
    import convforge
    from convforge import dispatch
    rows = []
    for label, xs, ws, kw in fit.GRID[:8]:
        spec = convforge.make_spec("conv2d", xs, ws, **kw)
        raw = spec.flops() / 1e11
        f = dispatch.cost_features(spec, raw)
        rows.append(dict(label=label, algo="a", raw_cost=raw, fwd_s=2.0 * f[0] + 0.5 * f[4]))
        rows.append(dict(label=label, algo="b", raw_cost=raw, fwd_s=1.0 * f[1] + 0.2 * f[2]))
    table = fit.fit(rows, "fwd_s")
    assert table["a"]["coef"] == pytest.approx([2.0, 0, 0, 0, 0.5], abs=1e-6)
    assert table["b"]["coef"] == pytest.approx([0, 1.0, 0.2, 0, 0], abs=1e-6)
    assert fit.quality(rows, "fwd_s", loo=False) == (8, 8)
