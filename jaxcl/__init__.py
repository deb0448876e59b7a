"""jaxcl: a JAX functional training engine for contrastive learning under imbalance.

The engine (`jaxcl.engine`) runs any registered experiment (`jaxcl.experiments`;
`jaxcl.experiment(name)` returns one, `jaxcl.experiment_names()` lists them): Liao et al.'s
model ("liao", the default; its public pieces in `jaxcl.liao`) and the class-mean geometry of
generalized contrastive losses ("geometry"; `jaxcl.geometry`). Shared maths: `jaxcl.losses`
(the loss family), `jaxcl.fit`. From Python: `jaxcl.run` runs a sweep as `jaxcl run` does,
`jaxcl.open` reads a run directory as pandas tables (`jaxcl.api`); the errors they raise are
importable from here. `Config`, `encode` and `info_nce` at the top level are liao's (SPEC §7).
"""

from jaxcl import experiments, fit, geometry, liao  # noqa: F401  (registers every experiment)
from jaxcl.api import Run, experiment, experiment_names, open, run
from jaxcl.engine.lock import RunDirBusy
from jaxcl.engine.signals import Interrupted
from jaxcl.errors import ConfigError
from jaxcl.fileio import DiskFullError
from jaxcl.liao import Config, encode, info_nce
from jaxcl.losses import contrastive_loss

__all__ = [
    "Config",
    "ConfigError",
    "DiskFullError",
    "Interrupted",
    "Run",
    "RunDirBusy",
    "contrastive_loss",
    "encode",
    "experiment",
    "experiment_names",
    "fit",
    "geometry",
    "info_nce",
    "liao",
    "open",
    "run",
]
