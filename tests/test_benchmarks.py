"""The benchmark scripts: run.py --quick in-process, and the cost-model fit's maths."""

from __future__ import annotations

import importlib.util
import json
import math
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


def test_fit_recovers_a_power_law_and_scores_choices():
    fit = _load("fit_cost_model")
    rows = []
    for i, cost in enumerate([1e-4, 1e-3, 1e-2, 1e-1]):
        rows.append(dict(label=f"s{i}", algo="a", raw_cost=cost, fwd_s=2.0 * cost ** 0.9))
        rows.append(dict(label=f"s{i}", algo="b", raw_cost=cost, fwd_s=0.5 * cost ** 1.1))
    table = fit.fit(rows, "fwd_s")
    assert table["a"][0] == pytest.approx(math.log(2.0)) and table["a"][1] == pytest.approx(0.9)
    assert table["b"][1] == pytest.approx(1.1)
    assert fit.quality(rows, "fwd_s", loo=False) == (4, 4)
