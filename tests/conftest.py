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
