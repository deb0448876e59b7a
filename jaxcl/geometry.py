"""Public entry to the geometry experiment's convex program (SPEC §9–§10): the optimal Gram
matrix of the class means, G* = argmin F(G) over Gram matrices of unit vectors (of rank ≤ p with
`rank=p`; under hard negatives with `hard_beta`), the rest point of constant-weight hard-negative
training, and the minority collapse threshold ρ*; and the experiment's validated config. See
jaxcl/experiments/geometry/objective.py (F), minimizer.py (G*), optimal.py (ρ*, and every public
name of G*) and config.py."""

from jaxcl.experiments.geometry.config import Config
from jaxcl.experiments.geometry.optimal import (
    collapse_threshold,
    collapsed_objective,
    hard_equilibrium,
    kkt_residuals,
    optimal_gram,
    simplex_etf,
)

__all__ = [
    "Config",
    "collapse_threshold",
    "collapsed_objective",
    "hard_equilibrium",
    "kkt_residuals",
    "optimal_gram",
    "simplex_etf",
]
