"""Shared fixtures: seeds and the hypothesis profiles (derandomised in CI)."""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, max_examples=40, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "dev", max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(autouse=True, scope="session")
def _compiled_kernels_ready():
    """Every compiled kernel ready before the first test, so that "auto" chooses the same
    algorithms in every test whatever ran before (the cold path: tests/test_compile.py)."""
    import convforge

    convforge.warmup()
    yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
