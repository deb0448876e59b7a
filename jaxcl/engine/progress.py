"""The progress bars of `jaxcl run` (tqdm): the whole sweep and the current shape group."""

from __future__ import annotations

import sys

import jax


class Progress:
    """Two live bars, the whole sweep and the current group, in config-steps with rate and ETA.

    Silent when stderr is not a terminal (or when disabled), and on processes other than 0.
    """

    def __init__(self, total: int, enabled: bool | None):
        from tqdm.auto import tqdm

        if enabled is None:
            enabled = sys.stderr.isatty()
        enabled = enabled and jax.process_index() == 0
        self._tqdm = tqdm
        self._kw = dict(unit="cfg·step", unit_scale=True, dynamic_ncols=True, disable=not enabled)
        self.total = tqdm(total=total, desc="sweep", position=0, **self._kw)
        self.bar = None

    def group(self, desc: str, total: int):
        if self.bar is not None:
            self.bar.close()
        self.bar = self._tqdm(total=total, desc=desc, position=1, leave=False, **self._kw)

    def update(self, n: int):
        self.total.update(n)
        if self.bar is not None:
            self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        self.total.close()
