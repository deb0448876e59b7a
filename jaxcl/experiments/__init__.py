"""The experiments jaxcl's engine runs, each a package registered under its name. Adding one is a
folder here (an `Experiment` subclass, see jaxcl/engine/protocol.py) and a line below."""

from jaxcl.engine import protocol
from jaxcl.experiments import liao  # registers "liao"
from jaxcl.experiments import geometry  # noqa: F401  (registers "geometry")

# The default experiment: a config or final json without an `experiment` field is liao's (its
# sweep files, e.g. sweeps/theorem33.toml, name none).
protocol.set_default(liao.EXPERIMENT.name)
