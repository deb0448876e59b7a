"""Strict, fast tests: rank promotion raises, and 2 CPU devices so sharding is always exercised."""

import os

os.environ["JAXCL_COMPILE_CACHE"] = "off"  # in-process `jaxcl run`s leave ~/.cache alone
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
).strip()

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(scope="session")
def tiny():
    """Keyword arguments for a tiny, fast config shared by many tests (one compile per shape)."""
    return dict(d=5, m=6, L=3, K=8, steps=40, log_every=10)


@pytest.fixture(scope="session")
def jax_cache(tmp_path_factory):
    """A persistent compilation cache for the `jaxcl` subprocesses of the whole session."""
    return str(tmp_path_factory.mktemp("jax_cache"))


# The tests that compare computed numbers with an independent reference (numpy, autodiff, exact
# enumeration) or a fixture: marked `numerics`, so that `dev.py test` runs them a second time
# under XLA_FLAGS=--xla_cpu_max_isa=SSE4_2, standing in for a CPU of another vector width.
# A whole file, or "file::test" (every parametrization of it).
NUMERICS = {
    "test_fixture_main.py",
    "test_loss.py",
    "test_losses.py",
    "test_observables.py",
    "test_data.py",
    "test_theory.py",
    "test_geometry_optimal.py",
    "test_train.py::test_vmapped_equals_one_at_a_time",
    "test_train.py::test_figure1_findings_reduced",
    "test_train.py::test_step_is_gradient_descent_on_info_nce",
    "test_train.py::test_step_is_gradient_descent_on_each_loss",
    "test_prune_modes.py::test_default_mode_is_todays",
    "test_prune_modes.py::test_weights_mode_step_is_gd_on_masked_info_nce",
    "test_geometry.py::test_batch_loss_matches_numpy",
    "test_geometry.py::test_sgd_step_is_gradient_descent_on_the_public_loss",
    "test_geometry.py::test_observables_match_numpy",
    "test_geometry.py::test_balanced_classes_reach_the_simplex_etf",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = os.path.basename(str(item.path))
        if name in NUMERICS or f"{name}::{item.originalname}" in NUMERICS:
            item.add_marker(pytest.mark.numerics)
