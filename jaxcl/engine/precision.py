"""The float32 matmul precision of every program jaxcl compiles: "highest" unless a run asks
for another, pinned at trace time so that it reaches each dot of a program (the training chunk,
init, the observables) whatever the caller's own jax settings."""

from __future__ import annotations

import contextlib
import functools

from jaxcl.errors import ConfigError

# On Ampere and Hopper GPUs jax's own default lets a float32 matmul run as TF32 (about 1e-3
# relative), which would change results silently from one card to the next; on CPU every
# setting computes in float32, so "highest" costs nothing there.
DEFAULT = "highest"
# jax's names (jax.default_matmul_precision): "float32" is "highest"; "tensorfloat32" is
# "high"; "default" lets the backend pick (TF32 on recent NVIDIA GPUs, one bfloat16 pass on
# TPU); "bfloat16" is "default".
CHOICES = ("highest", "float32", "high", "tensorfloat32", "default", "bfloat16")


def check(precision: str | None) -> str:
    """The precision to use: `precision`, or DEFAULT for None.

    Raises:
      ConfigError: a name jax does not know, naming it and the choices.
    """
    if precision is None:
        return DEFAULT
    if precision not in CHOICES:
        raise ConfigError(f"matmul_precision = {precision!r}: expected one of {', '.join(CHOICES)}")
    return precision


def scope(precision: str | None = None) -> contextlib.AbstractContextManager:
    """A context in which jax traces float32 matmuls at `precision` (default DEFAULT)."""
    import jax  # here: the CLI checks a precision's name before any backend starts

    return jax.default_matmul_precision(check(precision))


def pinned(fn, precision: str | None = None):
    """fn traced under `scope(precision)`: jit(pinned(fn, p)) compiles every dot of fn, its
    gradients' included, at p, whatever the context the jitted function is called in."""
    precision = check(precision)

    @functools.wraps(fn)
    def traced(*args, **kwargs):
        with scope(precision):
            return fn(*args, **kwargs)

    return traced
