"""jaxcl: a JAX functional training engine for contrastive learning under imbalance.

The engine (`jaxcl.engine`) runs any registered experiment (`jaxcl.experiments`): Liao et
al.'s model ("liao", the default) and the class-mean geometry of generalized contrastive
losses ("geometry"). Shared maths: `jaxcl.losses` (the loss family), `jaxcl.fit`. From Python:
`jaxcl.run` runs a sweep as `jaxcl run` does, `jaxcl.open` reads a run directory as pandas
tables (`jaxcl.api`).
"""

from jaxcl import experiments, fit, geometry  # noqa: F401  (registers every experiment)
from jaxcl.api import Run, open, run
from jaxcl.errors import ConfigError
from jaxcl.experiments.liao.config import Config
from jaxcl.experiments.liao.loss import info_nce
from jaxcl.experiments.liao.model import encode
from jaxcl.losses import contrastive_loss

__all__ = [
    "Config",
    "ConfigError",
    "Run",
    "contrastive_loss",
    "encode",
    "fit",
    "geometry",
    "info_nce",
    "open",
    "run",
]
