"""Liao's model: the validated, frozen config (SPEC §1–4, §8) and its split into static and
traced parts."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, NamedTuple

from jaxcl import losses
from jaxcl.configbase import BaseConfig, check_types, require as _require
from jaxcl.configbase import stack_hparams  # noqa: F401  (re-exported: tests, benchmarks)
from jaxcl.errors import ConfigError  # noqa: F401  (re-exported)

_STEPS_RE = re.compile(r"^\s*(?:(\d+(?:\.\d*)?)\s*\*\s*)?(T3|T4)\s*$")
_LOSS_FIELDS = ("loss", "loss_alpha", "loss_beta", "loss_psi", "loss_phi")
PRUNE_MODES = ("neurons", "neurons_once", "weights")


@dataclasses.dataclass(frozen=True)
class Config(BaseConfig):
    """Every knob of one training run. Fields left as None resolve to the SPEC's conventions.

    Shape fields (d, d1, m, L, K, dictionary, log_every, ...) are static under jit; the rest
    are stacked into traced arrays so that one compile serves a whole grid (see `hparams`).
    """

    # --- data model (SPEC §1)
    d: int = 9
    d1: int | None = None  # convention: 2d
    dictionary: str = "qr"  # "qr" (orthonormal columns from QR of a Gaussian) or "identity"
    L: int = 4
    K: int = 64
    eps_max: float = 1.0
    ratio: float = 0.25  # eps_min / eps_max
    major_fraction: float = 5 / 9
    C_z: float = 4.0
    feature_scale: float = 1.0
    sigma_xi: float | None = None  # convention: sqrt(log d) / d
    # --- encoder (SPEC §2)
    m: int | None = None  # default round(d ** C_m)
    C_m: float = 1.5
    init_mass: float = 0.1
    train_attention: bool = False  # SPEC §2's extension: W_Q, W_K, W_V trained, from I
    # --- objective and training (SPEC §3)
    tau: float | None = None  # convention: log d
    lam: float | None = None  # None: lam_at_9 scaled with the feature growth rate (see LAM)
    lam_at_9: float = 0.03
    eta: float = 1.0
    steps: int | str = 1000  # an int, "T3", "T4" or e.g. "0.5*T4"
    log_every: int = 50
    stage1_steps: int | None = None  # None: eq. 41 rule
    c_b: float = 0.2
    bias_rate: float = 1e-3
    stage3_bias: str = "track"  # "track" (b ∝ ‖w‖) or "freeze" (Sun et al.)
    # --- pruning (SPEC §4)
    prune_fraction: float = 0.0
    prune_mode: str = "neurons"  # "neurons" (SPEC §4), "neurons_once" or "weights"; see n_prune
    prune_at: str | None = None  # neurons_once only: "T1" (None means T1) or "T2"
    # --- observables (SPEC §5)
    gamma_c0: float = 5e-4
    probe_samples: int = 512
    probe_ridge: float = 1e-3
    # per neuron, N_i(t) (eq. 16's threshold at time t) at the first chunk end at or after T_2
    # and after 2 T_2, kept in the final npz (N_T2, N_2T2: (m, d) bool) with the steps taken
    snapshot_sets: bool = False
    # --- numerics
    matmul_dtype: str = "float32"
    seed: int = 0
    # --- the experiment and its loss (SPEC §8; infonce is eqs. 1-2)
    experiment: str = "liao"
    loss: str = "infonce"
    loss_alpha: float = 1.0
    loss_beta: float = 1.0
    loss_psi: str = "log1p"
    loss_phi: str = "exp"
    hard_beta: float = 0.0  # SPEC §10: negatives weighted ∝ e^{β s} (0: uniform negatives)

    ID_SKIP_IF_DEFAULT = (
        ("experiment",)
        + _LOSS_FIELDS
        + ("prune_mode", "prune_at", "train_attention", "hard_beta", "snapshot_sets")
    )

    def __post_init__(self):
        check_types(self)
        _require(self.experiment == "liao", "experiment", self.experiment, "must be 'liao'")
        losses.check_fields(
            self.loss, self.loss_alpha, self.loss_beta, self.loss_psi, self.loss_phi
        )
        _require(self.hard_beta >= 0, "hard_beta", self.hard_beta, "must be >= 0")
        _require(self.d >= 3, "d", self.d, "must be >= 3 (log log d must be positive)")
        if self.d1 is not None:
            _require(self.d1 >= self.d, "d1", self.d1, f"must be >= d = {self.d}")
        _require(
            self.dictionary in ("qr", "identity"),
            "dictionary",
            self.dictionary,
            "must be 'qr' or 'identity'",
        )
        _require(self.L >= 1, "L", self.L, "must be >= 1")
        _require(self.K >= 2, "K", self.K, "must be >= 2 (in-batch negatives)")
        _require(self.eps_max > 0, "eps_max", self.eps_max, "must be > 0")
        _require(0 < self.ratio <= 1, "ratio", self.ratio, "must be in (0, 1]")
        _require(
            0 < self.major_fraction <= 1, "major_fraction", self.major_fraction, "must be in (0, 1]"
        )
        _require(self.C_z > 0, "C_z", self.C_z, "must be > 0")
        _require(self.feature_scale > 0, "feature_scale", self.feature_scale, "must be > 0")
        if self.sigma_xi is not None:
            _require(self.sigma_xi >= 0, "sigma_xi", self.sigma_xi, "must be >= 0")
        if self.m is not None:
            _require(self.m >= 1, "m", self.m, "must be >= 1")
        else:
            _require(self.C_m > 0, "C_m", self.C_m, "must be > 0")
            _require(round(self.d**self.C_m) >= 1, "C_m", self.C_m, "gives m < 1")
        _require(self.init_mass > 0, "init_mass", self.init_mass, "must be > 0")
        if self.tau is not None:
            _require(self.tau > 0, "tau", self.tau, "must be > 0")
        if self.lam is not None:
            _require(self.lam >= 0, "lam", self.lam, "must be >= 0")
        _require(self.lam_at_9 >= 0, "lam_at_9", self.lam_at_9, "must be >= 0")
        _require(self.eta > 0, "eta", self.eta, "must be > 0")
        if isinstance(self.steps, str):
            _require(
                _STEPS_RE.match(self.steps) is not None,
                "steps",
                self.steps,
                "must be an int, 'T3', 'T4' or '<x>*T3' / '<x>*T4'",
            )
        _require(self.n_steps >= 1, "steps", self.steps, "resolves to fewer than 1 step")
        _require(self.log_every >= 1, "log_every", self.log_every, "must be >= 1")
        if self.stage1_steps is not None:
            _require(self.stage1_steps >= 1, "stage1_steps", self.stage1_steps, "must be >= 1")
        _require(self.c_b >= 0, "c_b", self.c_b, "must be >= 0")
        _require(self.bias_rate >= 0, "bias_rate", self.bias_rate, "must be >= 0")
        _require(
            self.stage3_bias in ("track", "freeze"),
            "stage3_bias",
            self.stage3_bias,
            "must be 'track' or 'freeze'",
        )
        _require(
            0 <= self.prune_fraction < 1, "prune_fraction", self.prune_fraction, "must be in [0, 1)"
        )
        _require(
            self.prune_mode in PRUNE_MODES,
            "prune_mode",
            self.prune_mode,
            f"must be one of {', '.join(map(repr, PRUNE_MODES))}",
        )
        if self.prune_at is not None:
            _require(
                self.prune_mode == "neurons_once",
                "prune_at",
                self.prune_at,
                f"only applies to prune_mode = 'neurons_once' (prune_mode is "
                f"{self.prune_mode!r}); leave it unset",
            )
            _require(
                self.prune_at in ("T1", "T2"), "prune_at", self.prune_at, "must be 'T1' or 'T2'"
            )
        _require(self.gamma_c0 >= 0, "gamma_c0", self.gamma_c0, "must be >= 0")
        _require(self.probe_samples >= 2, "probe_samples", self.probe_samples, "must be >= 2")
        _require(self.probe_ridge > 0, "probe_ridge", self.probe_ridge, "must be > 0")
        _require(
            self.matmul_dtype in ("float32", "bfloat16"),
            "matmul_dtype",
            self.matmul_dtype,
            "must be 'float32' or 'bfloat16'",
        )
        _require(self.seed >= 0, "seed", self.seed, "must be >= 0")

    # ---- derived values (properties, never written back)
    @property
    def D1(self) -> int:
        return 2 * self.d if self.d1 is None else self.d1

    @property
    def M_neurons(self) -> int:
        return round(self.d**self.C_m) if self.m is None else self.m

    @property
    def TAU(self) -> float:
        return math.log(self.d) if self.tau is None else self.tau

    @property
    def SIGMA_XI(self) -> float:
        return math.sqrt(math.log(self.d)) / self.d if self.sigma_xi is None else self.sigma_xi

    @property
    def LAM(self) -> float:
        """Weight decay λ. By default λ keeps the ratio it has at d = 9 to a feature's per-step
        growth rate η ε_j C_z log log d / (d τ) (eq. 45, with the 1/τ of the InfoNCE gradient),
        so that majority features outgrow it and minority ones do not at every d."""
        if self.lam is not None:
            return self.lam

        def rate(d: int, tau: float) -> float:
            return math.log(math.log(d)) / (d * tau)

        return self.lam_at_9 * (rate(self.d, self.TAU) / rate(9, math.log(9)))

    @property
    def eps_min(self) -> float:
        return self.ratio * self.eps_max

    @property
    def n_major(self) -> int:
        return min(self.d, max(1, round(self.major_fraction * self.d)))

    @property
    def T3(self) -> float:
        return self.d**1.01 / self.eta

    @property
    def T4(self) -> float:
        return self.d**1.99 / self.eta

    @property
    def n_steps(self) -> int:
        if isinstance(self.steps, int):
            return self.steps
        mult, which = _STEPS_RE.match(self.steps).groups()
        base = self.T3 if which == "T3" else self.T4
        return int(math.ceil((float(mult) if mult else 1.0) * base))

    @property
    def n_prune(self) -> int:
        """How many are masked: neurons (prune_mode "neurons", "neurons_once"), or entries of
        the m × d1 matrix W ("weights")."""
        units = self.M_neurons * (self.D1 if self.prune_mode == "weights" else 1)
        return int(round(self.prune_fraction * units))

    @property
    def prune_stage(self) -> int:
        """neurons_once: the stage whose start removes the neurons (2 at T_1, 3 at T_2)."""
        return 3 if self.prune_at == "T2" else 2

    def resolved(self) -> dict[str, Any]:
        """Every field with conventions filled in, plus derived quantities (for final/*.json)."""
        out = dataclasses.asdict(self)
        out.update(
            d1=self.D1,
            m=self.M_neurons,
            tau=self.TAU,
            sigma_xi=self.SIGMA_XI,
            lam=self.LAM,
            steps=self.n_steps,
            steps_spec=self.steps,
            eps_min=self.eps_min,
            n_major=self.n_major,
            T3=self.T3,
            T4=self.T4,
        )
        return out

    def id_prefix(self) -> str:
        return f"d{self.d}_m{self.M_neurons}_r{self.ratio:g}_s{self.seed}"

    def static(self) -> "Static":
        return Static(
            d=self.d,
            d1=self.D1,
            m=self.M_neurons,
            L=self.L,
            K=self.K,
            dictionary=self.dictionary,
            log_every=self.log_every,
            stage3_freeze=self.stage3_bias == "freeze",
            probe_samples=self.probe_samples,
            matmul_dtype=self.matmul_dtype,
            prune=self.n_prune > 0,
            loss=self.loss,
            loss_psi=self.loss_psi,
            loss_phi=self.loss_phi,
            prune_mode=self.prune_mode,
            train_attention=self.train_attention,
            hard=self.hard_beta > 0,
            snapshot_sets=self.snapshot_sets,
        )

    def hparams(self) -> "HParams":
        return HParams(
            seed=self.seed,
            eps_max=self.eps_max,
            eps_min=self.eps_min,
            n_major=self.n_major,
            C_z=self.C_z,
            feature_scale=self.feature_scale,
            sigma_xi=self.SIGMA_XI,
            init_mass=self.init_mass,
            tau=self.TAU,
            lam=self.LAM,
            eta=self.eta,
            steps=self.n_steps,
            stage1_steps=-1 if self.stage1_steps is None else self.stage1_steps,
            c_b=self.c_b,
            bias_rate=self.bias_rate,
            n_prune=self.n_prune,
            gamma_c0=self.gamma_c0,
            probe_ridge=self.probe_ridge,
            loss_alpha=self.loss_alpha,
            loss_beta=self.loss_beta,
            prune_stage=self.prune_stage,
            hard_beta=self.hard_beta,
        )


class Static(NamedTuple):
    """The hashable, shape-determining part of a config: one compile per distinct value."""

    d: int
    d1: int
    m: int
    L: int
    K: int
    dictionary: str
    log_every: int
    stage3_freeze: bool
    probe_samples: int
    matmul_dtype: str
    prune: bool  # a pruning mask at all: off, the step skips ranking the neurons (SPEC §4)
    loss: str = "infonce"  # SPEC §8's family; infonce keeps the written-out gradient
    loss_psi: str = "log1p"
    loss_phi: str = "exp"
    prune_mode: str = "neurons"  # which mask (SPEC §4 and its variants; Config.prune_mode)
    train_attention: bool = False  # W_Q, W_K, W_V in the state and the gradient (SPEC §2)
    hard: bool = False  # hard_beta > 0: SPEC §10's weighted negatives (off: no weights computed)
    snapshot_sets: bool = False  # N_i(t) per neuron near T_2 and 2 T_2 in the state


class HParams(NamedTuple):
    """The traced, per-config part of a config; fields are scalars (stacked to (n,) by vmap)."""

    seed: Any
    eps_max: Any
    eps_min: Any
    n_major: Any
    C_z: Any
    feature_scale: Any
    sigma_xi: Any
    init_mass: Any
    tau: Any
    lam: Any
    eta: Any
    steps: Any
    stage1_steps: Any
    c_b: Any
    bias_rate: Any
    n_prune: Any
    gamma_c0: Any
    probe_ridge: Any
    loss_alpha: Any = 1.0
    loss_beta: Any = 1.0
    prune_stage: Any = 2  # neurons_once: removal when this stage starts (2: T_1, 3: T_2)
    hard_beta: Any = 0.0  # SPEC §10's β (read only where Static.hard)

    INT_FIELDS = ("seed", "n_major", "steps", "stage1_steps", "n_prune", "prune_stage")
