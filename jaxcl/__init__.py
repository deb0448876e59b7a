"""jaxcl: a JAX functional training engine for contrastive learning on imbalanced sparse-coding data."""

from jaxcl.config import Config, ConfigError
from jaxcl.loss import info_nce
from jaxcl.model import encode

__all__ = ["Config", "ConfigError", "encode", "info_nce"]
