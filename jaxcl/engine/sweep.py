"""Sweep files: a TOML `[base]` table of config fields and a `[grid]` table of lists, expanded
to validated configs of the experiment each point names (`experiment`, default: the one
jaxcl/experiments sets) and grouped by experiment and everything that changes shapes (one
compile per group).

A grid entry is a list of values of the field it names, or a list of inline tables: bundles of
fields set together, for fields that only make sense jointly (e.g. a choice and its parameters:
`model = [{model = "small"}, {model = "large", width = 512}]`). Several `[[grid]]`
tables instead of one `[grid]` join their products (e.g. more seeds for one part of a study)."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import tomllib
from collections import OrderedDict
from typing import Any

from jaxcl.engine import protocol
from jaxcl.engine.options import check_sweep_table
from jaxcl.errors import ConfigError

_TABLES = ("base", "grid", "sweep")


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A parsed sweep: base fields, grid lists, `--set` overrides, and sweep-level options."""

    base: dict
    grid: dict
    overrides: dict
    options: dict
    text: str = ""

    def grids(self) -> list[dict]:
        """The grid tables: one `[grid]`, or every `[[grid]]` of an array of grids."""
        return self.grid if isinstance(self.grid, list) else [self.grid]

    def configs(self) -> list:
        """Each grid's product (the union over `[[grid]]` tables, grid order kept, a config
        that several grids give taken once), each point validated as a config of its
        experiment; errors name the field, value and point (and the experiment, for a field it
        does not have). Expanded once per Sweep (it is frozen); each call returns a new list."""
        if "_configs" not in self.__dict__:
            object.__setattr__(self, "_configs", tuple(self._expand()))
        return list(self.__dict__["_configs"])

    def _expand(self) -> list:
        out, seen = [], {}
        for gi, grid in enumerate(self.grids()):
            mine = {}
            keys = list(grid)
            for values in itertools.product(*(grid[k] for k in keys)):
                point = dict(zip(keys, values))
                fields = dict(self.base)
                for k, v in point.items():  # a table is a bundle of fields set together
                    fields.update(v if isinstance(v, dict) else {k: v})
                fields.update(self.overrides)
                where = ("grid point " + json.dumps(point) if point else "[base]") + (
                    f" of [[grid]] {gi + 1}" if isinstance(self.grid, list) else ""
                )
                try:
                    exp = protocol.get(
                        fields["experiment"] if "experiment" in fields else protocol.default()
                    )
                    cfg = exp.Config.from_dict(fields)
                except ConfigError as e:
                    raise ConfigError(f"{where}: {e}") from None
                except TypeError as e:  # pragma: no cover - from_dict checks names first
                    raise ConfigError(f"{where}: {e}") from None
                if cfg.config_id in mine:
                    raise ConfigError(
                        f"grid points {mine[cfg.config_id]} and {json.dumps(point)}"
                        f" give the same config ({cfg.config_id})"
                    )
                mine[cfg.config_id] = json.dumps(point)
                if cfg.config_id not in seen:
                    seen[cfg.config_id] = True
                    out.append(cfg)
        return out

    def fingerprint(self) -> dict:
        """What identifies the sweep in a run directory: every field that shapes its results."""
        return {"base": self.base, "grid": self.grid, "overrides": self.overrides}

    def fingerprint_hash(self) -> str:
        blob = json.dumps(self.fingerprint(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def parse_set(item: str) -> tuple[str, Any]:
    """`field=value` with value read as a TOML literal (so 0.5, 3, "T4", true), else a string."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected field=value")
    key, raw = (s.strip() for s in item.split("=", 1))
    if not key:
        raise ConfigError(f"--set {item!r}: empty field name")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def loads(text: str, overrides: dict | None = None, source: str = "<sweep>") -> Sweep:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: malformed TOML: {e}") from None
    for key, value in doc.items():
        if key == "grid" and isinstance(value, list) and all(isinstance(v, dict) for v in value):
            continue  # [[grid]]: an array of grid tables, their products joined
        if key not in _TABLES or not isinstance(value, dict):
            raise ConfigError(
                f"{source}: unknown top-level entry {key!r} (value {value!r}); "
                f"a sweep has tables {', '.join('[' + t + ']' for t in _TABLES)}"
            )
    grid = doc.get("grid", {})
    grids = grid if isinstance(grid, list) else [grid]
    if not grids:
        raise ConfigError(f"{source}: [[grid]] is empty")
    for key, value in ((k, v) for g in grids for k, v in g.items()):
        if not isinstance(value, list) or not value:
            raise ConfigError(
                f"{source}: [grid] field {key!r} = {value!r}: expected a non-empty list of values"
            )
        tables = [isinstance(v, dict) for v in value]
        if any(tables) and not all(tables):
            raise ConfigError(
                f"{source}: [grid] {key!r} = {value!r}: a list of values or a list "
                "of tables (bundles of fields set together), not both"
            )
    options = doc.get("sweep", {})
    check_sweep_table(options, source)
    sweep = Sweep(
        base=doc.get("base", {}),
        grid=grid,
        overrides=dict(overrides or {}),
        options=options,
        text=text,
    )
    sweep.configs()  # validate every point now, before anything compiles
    return sweep


def load(path: str, sets: list[str] | None = None) -> Sweep:
    try:
        with open(path, "rb") as f:
            text = f.read().decode()
    except OSError as e:
        raise ConfigError(f"sweep file {path!r}: {e.strerror}") from None
    overrides = dict(parse_set(s) for s in (sets or []))
    return loads(text, overrides, source=path)


def group_by_static(configs: list) -> "OrderedDict[tuple[str, Any], list]":
    """Configs of one experiment that share shapes share one compiled program; the key is
    (experiment name, static part); grid order is kept."""
    groups: OrderedDict[tuple[str, Any], list] = OrderedDict()
    for cfg in configs:
        groups.setdefault((cfg.experiment, cfg.static()), []).append(cfg)
    return groups


def shard_configs(configs: list, shard) -> list:
    """A job array task's slice (`rundir.Shard` I/N) of the grid: contiguous in grid order (so
    shape groups mostly stay whole), sizes differing by at most one; deterministic, and the N
    slices cover the grid exactly once."""
    n = len(configs)
    return [c for k, c in enumerate(configs) if k * shard.count // n == shard.index]


@dataclasses.dataclass(frozen=True)
class Work:
    """What one `jaxcl run` trains: the grid, this task's slice of it (`shard`; the whole grid
    without one), and that slice grouped by shape. Sliced and grouped once (`of`) and passed
    along: the launcher sizes the CPU devices from it, the runner trains its groups.

    Attributes:
      sweep: the parsed sweep.
      shard: the job-array slice (`rundir.Shard`), or None for the whole grid.
      configs: every config of the grid, in grid order.
      mine: the configs of this slice, in grid order.
      groups: `group_by_static(mine)`: {(experiment, static part): configs}.
      group_sizes: {(experiment, static part): configs of the whole grid in that group}.
    """

    sweep: Sweep
    shard: Any
    configs: list
    mine: list
    groups: "OrderedDict[tuple[str, Any], list]"
    group_sizes: dict

    @classmethod
    def of(cls, sweep: Sweep, shard=None) -> "Work":
        """Slices and groups `sweep` for the task `shard` (None: the whole grid).

        Raises:
          ConfigError: more slices than the grid has configs.
        """
        configs = sweep.configs()
        if shard is not None and shard.count > len(configs):
            raise ConfigError(
                f"--shard {shard}: the grid has only {len(configs)} configs, "
                f"fewer than {shard.count} slices"
            )
        mine = shard_configs(configs, shard) if shard is not None else configs
        sizes: dict = {}
        for cfg in configs:
            key = (cfg.experiment, cfg.static())
            sizes[key] = sizes.get(key, 0) + 1
        return cls(sweep, shard, configs, mine, group_by_static(mine), sizes)
