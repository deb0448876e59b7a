"""The experiments jaxcl's engine runs, each a package registered under its name. Adding one is a
folder here (an `Experiment` subclass, see jaxcl/engine/protocol.py) and a line below."""

from jaxcl.experiments import liao  # noqa: F401  (registers "liao")
from jaxcl.experiments import geometry  # noqa: F401  (registers "geometry")
