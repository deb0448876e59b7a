"""Public entry to the geometry experiment's convex program (SPEC §9): the optimal Gram matrix
of the class means, G* = argmin F(G) over Gram matrices of unit vectors, and the minority
collapse threshold ρ*. See jaxcl/experiments/geometry/objective.py (F) and optimal.py (G*, ρ*)."""

from jaxcl.experiments.geometry.optimal import (collapse_threshold, collapsed_objective,
                                                kkt_residuals, optimal_gram, simplex_etf)

__all__ = ["collapse_threshold", "collapsed_objective", "kkt_residuals", "optimal_gram",
           "simplex_etf"]
