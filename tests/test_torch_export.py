"""torch.export on models with convforge layers: the graph holds convforge's operator, and
the exported program computes what torch's model does."""

from __future__ import annotations

import copy

import torch

import convforge.nn as cnn


def test_export_converted_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 5, padding=2), torch.nn.ReLU(),
                                torch.nn.Conv2d(6, 6, 3, groups=3, stride=2),
                                torch.nn.Flatten())
    ours = cnn.convert(copy.deepcopy(model))
    x = torch.randn(2, 3, 16, 16)
    program = torch.export.export(ours, (x,))
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert sum("convforge.conv2d" in t for t in targets) == 2, targets
    assert not any("aten.convolution" in t for t in targets)
    x2 = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(program.module()(x2), model(x2), rtol=1e-5, atol=1e-5)


def test_export_round_trip_through_save_and_load(tmp_path):
    layer = cnn.Conv2d(2, 3, 3, padding="same", padding_mode="circular")
    x = torch.randn(1, 2, 8, 8)
    program = torch.export.export(layer, (x,))
    path = tmp_path / "layer.pt2"
    torch.export.save(program, path)
    loaded = torch.export.load(path)
    torch.testing.assert_close(loaded.module()(x), layer(x))


def test_export_transposed_convolution():
    torch.manual_seed(0)
    theirs = torch.nn.ConvTranspose2d(3, 2, 4, stride=2, padding=1)
    ours = cnn.convert(copy.deepcopy(theirs))
    x = torch.randn(1, 3, 7, 7)
    program = torch.export.export(ours, (x,))
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert any("convforge.conv2d_grad_input" in t for t in targets), targets
    torch.testing.assert_close(program.module()(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_export_conv1d_model():
    torch.manual_seed(0)
    theirs = torch.nn.Sequential(torch.nn.Conv1d(3, 4, 5, padding=2), torch.nn.ReLU(),
                                 torch.nn.Conv1d(4, 2, 3, stride=2))
    ours = cnn.convert(copy.deepcopy(theirs))
    x = torch.randn(2, 3, 30)
    program = torch.export.export(ours, (x,))
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert sum("convforge.conv2d" in t for t in targets) == 2, targets
    torch.testing.assert_close(program.module()(x), theirs(x), rtol=1e-5, atol=1e-5)
