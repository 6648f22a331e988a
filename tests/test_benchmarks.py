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
    import torch

    import convforge
    from convforge import dispatch
    from convforge.algorithms import REGISTRY
    truth = {"im2col": lambda f: 2.0 * f[0] + 0.5 * f[4], "direct": lambda f: f[1] + 0.2 * f[2]}
    rows, shapes = [], {}
    for label, xs, ws, kw in fit.BASE[:8]:
        spec = fit._SPECS[label] = convforge.make_spec("conv2d", xs, ws, **kw)
        shapes[label] = [xs, ws, kw]
        for name, law in truth.items():
            raw = REGISTRY[name].cost(spec, torch.float32, torch.device("cpu"))
            t = law(dispatch.cost_features(spec, raw))
            rows.append(dict(label=label, algo=name, raw_cost=raw, forward=t, grad_input=t,
                             grad_weight=2 * t))
    table = fit.fit(rows, "forward")
    assert table["im2col"]["coef"] == pytest.approx([2.0, 0, 0, 0, 0.5], abs=1e-6)
    assert table["direct"]["coef"] == pytest.approx([0, 1.0, 0.2, 0, 0], abs=1e-6)
    for keys in [("forward",), ("grad_weight",), dispatch.PASSES]:
        assert fit.quality(rows, shapes, keys, loo=False)[:2] == (8, 8)


def test_networks_check_and_overhead_on_lenet():
    """networks.py's agreement check passes on a converted LeNet and fails on a broken one."""
    import torch

    net = _load("networks")
    model, ours, cl, x, y = net.variants("lenet")
    assert net.check(model, ours, cl, x, y) is None
    with torch.no_grad():
        ours[3].weight[0, 0, 0, 0] += 0.5                    # a wrong convolution
    assert "differ" in net.check(model, ours, cl, x, y)
    calls = net.overhead(rounds=40)
    assert set(calls) == {"no_grad", "grad"} and all(v > 0 for t in calls.values()
                                                       for v in t.values())


def test_first_call_child_reports_its_timings(tmp_path):
    first_call = _load("first_call")
    r = first_call.run("layer 32x16x32^2 3x3", "torch", str(tmp_path))
    assert set(r) == {"import", "first", "second"}
    assert all(v > 0 for v in r.values())


def test_memory_quick_measures_peaks_in_fresh_processes(tmp_path, capsys):
    memory = _load("memory")
    out = tmp_path / "m.json"
    assert memory.main(["--quick", "--cases", "d", "--algorithms", "torch,im2col",
                        "--passes", "forward", "--json", str(out)]) == 0
    assert "x torch" in capsys.readouterr().out
    rows = {r["algorithm"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"torch", "im2col"}
    for r in rows.values():
        assert "error" not in r and r["peak"] >= r["base"] > 0
    # im2col's columns of a 1024^2 image with a 31x31 kernel (3.8 GB) are tiled under
    # the 1 GiB default limit: the call's growth stays near it
    assert rows["im2col"]["peak"] - rows["im2col"]["base"] < rows["im2col"]["limit"] * 1.3


def _quick(name, tmp_path, capsys):
    """Run ``benchmarks/NAME.py --quick --json``: its printed table and its JSON rows."""
    out = tmp_path / f"{name}.json"
    assert _load(name).main(["--quick", "--json", str(out)]) == 0
    return capsys.readouterr().out, json.loads(out.read_text())


def test_signal_nd_quick_agrees_and_prints_ratios(tmp_path, capsys):
    text, rows = _quick("signal_nd", tmp_path, capsys)
    assert "x best" in text and "all results agree" in text
    assert {"convforge.convolve", "scipy.oaconvolve", "torch.conv1d",
            "convforge.ndimage.correlate"} <= {r["impl"] for r in rows}


def test_big_images_quick_agrees_with_in_memory(tmp_path, capsys):
    pytest.importorskip("dask_image")
    text, rows = _quick("big_images", tmp_path, capsys)
    assert "x dask-image" in text and "all convforge runs agree" in text
    assert {"convforge CLI", "dask-image", "convforge distributed"} <= {r["impl"] for r in rows}
    assert all(r["ok"] for r in rows if not r["impl"].startswith("CLI uint8 TIFF"))
    assert rows[-1]["impl"].startswith("CLI uint8 TIFF") and rows[-1]["ok"]
