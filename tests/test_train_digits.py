"""The digits LeNet trains with convforge's Conv2d and agrees with torch's from the same seed."""

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
import train_digits  # noqa: E402  (the example file itself, not a package)


@pytest.fixture(scope="module")
def data():
    return train_digits.load_data()


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: this small model is fastest so, above all on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_same_initial_model_for_both_backends():
    torch.manual_seed(3)
    ours = train_digits.build_model("convforge")
    torch.manual_seed(3)
    theirs = train_digits.build_model("torch")
    assert type(ours[0]).__module__ == "convforge.nn"
    assert isinstance(theirs[0], torch.nn.Conv2d)
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(p, q)
    x = torch.randn(5, 1, 16, 16)
    torch.testing.assert_close(ours(x), theirs(x))


def test_short_schedule_trains_and_backends_agree(data):
    """A short schedule (8 of the 20 epochs) reaches a sane accuracy with both backends, and
    the two runs, started from the same numbers, end within one point of each other."""
    x_train, _, x_test, y_test = data
    assert x_train.shape[1:] == (1, 16, 16) and len(y_test) == 359
    ours = train_digits.train("convforge", epochs=8, seed=0, data=data)
    theirs = train_digits.train("torch", epochs=8, seed=0, data=data)
    assert ours >= 0.88 and theirs >= 0.88
    assert abs(ours - theirs) <= 0.01


def test_main_prints_a_summary(capsys, data, monkeypatch):
    monkeypatch.setattr(train_digits, "load_data", lambda: data)
    assert train_digits.main(["--epochs", "1", "--compare", "--no-progress",
                              "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "convforge: 1 epochs, seed 0: test accuracy" in out and "summary: convforge" in out
    with pytest.raises(ValueError, match="backend must be one of"):
        train_digits.build_model("jax")
