"""Public entry to the liao experiment (Liao et al.'s model, SPEC §1–§4, §8): its validated
config, the encoder (SPEC §2) and the InfoNCE loss with its regularizer (SPEC §3). See
jaxcl/experiments/liao/ (config.py, model.py, loss.py; train.py for its training functions)."""

from jaxcl.experiments.liao.config import Config
from jaxcl.experiments.liao.loss import info_nce
from jaxcl.experiments.liao.model import encode

__all__ = ["Config", "encode", "info_nce"]
