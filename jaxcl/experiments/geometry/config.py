"""The geometry experiment's validated, frozen config (SPEC §9) and its split into static and
traced parts. Class sizes are traced: every ratio of a grid shares one compiled program, the
minority classes' rows past their size being padding that is never sampled."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import numpy as np

from jaxcl import losses
from jaxcl.configbase import BaseConfig, check_types, require

OPTIMIZERS = ("adam", "sgd")


@dataclasses.dataclass(frozen=True)
class Config(BaseConfig):
    """One training run of the unconstrained-features model of SPEC §9."""

    # added after run directories were written: out of the config id while at their default
    ID_SKIP_IF_DEFAULT = ("hard_beta",)

    experiment: str = "geometry"
    # --- classes
    n_major_classes: int = 2
    n_minor_classes: int = 2
    samples_major: int = 200
    ratio: float = 1.0  # a minority class has max(1, round(ratio * samples_major)) samples
    # --- representations u_n in R^p, z_n = u_n / ||u_n||
    p: int = 8
    init_scale: float = 1.0  # u_n(0) ~ N(0, init_scale^2 I_p)
    # --- a step: `batch` anchors, one positive each, `negatives` (k) negatives each
    batch: int = 64
    negatives: int = 8
    tau: float = 0.5
    loss: str = "infonce"
    loss_alpha: float = 1.0
    loss_beta: float = 1.0
    loss_psi: str = "log1p"
    loss_phi: str = "exp"
    hard_beta: float = 0.0  # SPEC §10: negatives weighted ∝ e^{β s} (0: uniform negatives)
    # --- optimizer (optax), learning rate with a cosine decay to 0 over `steps` (convention)
    optimizer: str = "adam"
    lr: float = 0.05
    steps: int = 3000
    log_every: int = 100
    # --- the predicted geometry (jaxcl.experiments.geometry.optimal)
    opt_starts: int = 3
    seed: int = 0

    def __post_init__(self):
        check_types(self)
        require(self.experiment == "geometry", "experiment", self.experiment, "must be 'geometry'")
        require(self.n_major_classes >= 1, "n_major_classes", self.n_major_classes, "must be >= 1")
        require(self.n_minor_classes >= 0, "n_minor_classes", self.n_minor_classes, "must be >= 0")
        require(
            self.n_classes >= 2,
            "n_minor_classes",
            self.n_minor_classes,
            "gives fewer than 2 classes in all",
        )
        require(self.samples_major >= 2, "samples_major", self.samples_major, "must be >= 2")
        require(0 < self.ratio <= 1, "ratio", self.ratio, "must be in (0, 1]")
        require(self.p >= 1, "p", self.p, "must be >= 1")
        require(self.init_scale > 0, "init_scale", self.init_scale, "must be > 0")
        require(self.batch >= 1, "batch", self.batch, "must be >= 1")
        require(self.negatives >= 1, "negatives", self.negatives, "must be >= 1 (k)")
        require(self.tau > 0, "tau", self.tau, "must be > 0")
        losses.check_fields(
            self.loss, self.loss_alpha, self.loss_beta, self.loss_psi, self.loss_phi
        )
        require(self.hard_beta >= 0, "hard_beta", self.hard_beta, "must be >= 0")
        require(
            self.optimizer in OPTIMIZERS,
            "optimizer",
            self.optimizer,
            f"must be one of {', '.join(OPTIMIZERS)}",
        )
        require(self.lr > 0, "lr", self.lr, "must be > 0")
        require(self.steps >= 1, "steps", self.steps, "must be >= 1")
        require(self.log_every >= 1, "log_every", self.log_every, "must be >= 1")
        require(self.opt_starts >= 1, "opt_starts", self.opt_starts, "must be >= 1")
        require(self.seed >= 0, "seed", self.seed, "must be >= 0")

    # ---- derived values
    @property
    def n_classes(self) -> int:
        return self.n_major_classes + self.n_minor_classes

    @property
    def samples_minor(self) -> int:
        return max(1, round(self.ratio * self.samples_major))

    @property
    def class_sizes(self) -> list[int]:
        return [self.samples_major] * self.n_major_classes + [
            self.samples_minor
        ] * self.n_minor_classes

    @property
    def n_samples(self) -> int:
        return sum(self.class_sizes)

    @property
    def pi(self) -> list[float]:
        """π_c = n_c / N (SPEC §9)."""
        return [n / self.n_samples for n in self.class_sizes]

    @property
    def n_steps(self) -> int:
        return self.steps

    def id_prefix(self) -> str:
        hard = f"_b{self.hard_beta:g}" if self.hard_beta else ""
        return (
            f"geo_C{self.n_major_classes}+{self.n_minor_classes}_r{self.ratio:g}"
            f"_k{self.negatives}{hard}_s{self.seed}"
        )

    def resolved(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.update(
            n_classes=self.n_classes,
            samples_minor=self.samples_minor,
            n_samples=self.n_samples,
            pi=self.pi,
            class_sizes=self.class_sizes,
        )
        return out

    def static(self) -> "Static":
        return Static(
            n_major_classes=self.n_major_classes,
            n_minor_classes=self.n_minor_classes,
            samples_major=self.samples_major,
            p=self.p,
            batch=self.batch,
            negatives=self.negatives,
            loss=self.loss,
            loss_psi=self.loss_psi,
            loss_phi=self.loss_phi,
            optimizer=self.optimizer,
            log_every=self.log_every,
            hard=self.hard_beta > 0,
        )

    def hparams(self) -> "HParams":
        return HParams(
            seed=self.seed,
            samples_minor=self.samples_minor,
            init_scale=self.init_scale,
            tau=self.tau,
            loss_alpha=self.loss_alpha,
            loss_beta=self.loss_beta,
            lr=self.lr,
            steps=self.steps,
            G_opt=self.G_opt(),
            hard_beta=self.hard_beta,
        )

    def G_opt(self) -> np.ndarray:
        """G* of the collapsed objective at this config's π, k, τ and loss (cached); with
        hard_beta > 0, G°(β), the rest point of training with constant hard-negative weights
        (`jaxcl.geometry.hard_equilibrium`, SPEC §10)."""
        return _optimal(
            tuple(self.pi),
            self.negatives,
            self.tau,
            self.loss,
            self.loss_alpha,
            self.loss_beta,
            self.loss_psi,
            self.loss_phi,
            self.opt_starts,
            self.hard_beta,
        )


@functools.lru_cache(maxsize=None)
def _optimal(*args) -> np.ndarray:
    # G* is the reference training is judged against, and cached across runs: always solved at
    # full float32 matmul precision, whatever the run's (a GPU's default would be TF32)
    import jax

    with jax.default_matmul_precision("highest"):
        return _solve_optimal(*args)


def _solve_optimal(pi, k, tau, loss, alpha, beta, psi, phi, n_starts, hard_beta=0.0):
    from jaxcl.experiments.geometry.optimal import hard_equilibrium, optimal_gram

    if hard_beta:
        return np.asarray(
            hard_equilibrium(
                np.asarray(pi), k, tau, hard_beta, loss, alpha, beta, psi, phi, n_starts=n_starts
            ),
            np.float64,
        )
    return np.asarray(
        optimal_gram(
            np.asarray(pi),
            k,
            tau,
            loss=loss,
            alpha=alpha,
            beta=beta,
            psi=psi,
            phi=phi,
            n_starts=n_starts,
        ),
        np.float64,
    )


class Static(NamedTuple):
    """Shapes and formulas: one compile per distinct value."""

    n_major_classes: int
    n_minor_classes: int
    samples_major: int
    p: int
    batch: int
    negatives: int
    loss: str
    loss_psi: str
    loss_phi: str
    optimizer: str
    log_every: int
    hard: bool = False  # hard_beta > 0: the weighted loss (off: the code of SPEC §9, bitwise)

    @property
    def n_classes(self) -> int:
        return self.n_major_classes + self.n_minor_classes

    @property
    def n_rows(self) -> int:
        """Rows of the representation array: every class at samples_major (minority padded)."""
        return self.n_classes * self.samples_major


class HParams(NamedTuple):
    """Traced per-config values (stacked to (n, ...) over a block)."""

    seed: Any
    samples_minor: Any
    init_scale: Any
    tau: Any
    loss_alpha: Any
    loss_beta: Any
    lr: Any
    steps: Any
    G_opt: Any  # (C, C) predicted Gram matrix of the class means
    hard_beta: Any = 0.0  # SPEC §10's β (read only where Static.hard)

    INT_FIELDS = ("seed", "samples_minor", "steps")


def collapse_applies(cfg_or_info) -> bool:
    """The convex program describes rank <= C Gram matrices: it needs p >= C (SPEC §9)."""
    get = cfg_or_info.get if isinstance(cfg_or_info, dict) else lambda k: getattr(cfg_or_info, k)
    return get("p") >= get("n_major_classes") + get("n_minor_classes")
