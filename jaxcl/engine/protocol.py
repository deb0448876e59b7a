"""The experiment protocol: all the engine knows of a model, and the registry it finds it in.

An experiment is a handful of pure functions over its own config, static part (shapes, hashable),
traced hyperparameters (a NamedTuple of scalars or arrays, stacked over a grid) and training
state (any pytree), plus host-side hooks for the run directory and the report. The engine
(sweep, programs, runner, run directory, checkpoints, CLI, report assembly) drives every
experiment through this class alone; it imports no experiment's module. Experiments register
themselves when `jaxcl.experiments` is imported (which `import jaxcl` does), in the manner of
gymnax's `make(name)`.

Contract of the pure functions (each acts on one config; the engine vmaps or scans them over
a block of configs and shards the block over devices):
- `init(static, hp) -> state`.
- `run_chunk(static, hp, state) -> (state, metrics)`: `static.log_every` steps under lax.scan,
  metrics reduced over the chunk inside jit (STYLE §6). `hp.steps` is the config's length: a
  config at or past it must not change, and the chunk's metrics must say so. `metrics` is a
  dict of scalars that must hold `step` (int), `logged` (bool: this chunk trained at least
  one step), `finite` (bool: no NaN/Inf appeared) and `bad_step` (int: the first non-finite
  step, −1 if none); every other entry becomes a column of results.jsonl.
- `final_arrays(state) -> dict` of arrays for `final/<config_id>.npz` (passed through the
  host-side `finalize(cfg, arrays)` first).
- `final_scalars(state) -> dict` of scalars for the top level of `final/<config_id>.json`.
- `final_observables(static, hp, state) -> dict` of arrays for its `observables` key.

Its report is a last stage that reads the run directory and returns `Section`s; the engine
assembles them into report.md and report.json and writes the files they name.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable, ClassVar

from jaxcl.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Section:
    """One part of a report, as an experiment's `report` returns it.

    Attributes:
      lines: its markdown lines, in the order report.md shows them.
      summary: what it adds to the experiment's entry of report.json `results` (merged, in
        order, with its other sections' summaries).
      files: what it puts beside report.md (its PNG figures, a CSV): (file name, function that
        writes that file to the path it is given). The engine calls them once every section of
        every experiment is computed, so a report that fails writes nothing.
    """

    lines: tuple[str, ...] = ()
    summary: dict = dataclasses.field(default_factory=dict)
    files: tuple[tuple[str, Callable[[str], None]], ...] = ()

    def __post_init__(self):  # lists in, tuples kept: a section is not appended to later
        object.__setattr__(self, "lines", tuple(self.lines))
        object.__setattr__(self, "files", tuple(self.files))


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand an experiment adds to `jaxcl`. `run` gets the parsed arguments;
    `args.provenance()` gives the record of the invocation so far (command, machine, commit,
    seconds, environment) for what it writes."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class Experiment:
    """Base class of an experiment: subclasses set `name` and `Config` and implement the pure
    functions of the module docstring; the hooks below have defaults."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = object  # a jaxcl.configbase.BaseConfig subclass
    sizing_hint: ClassVar[str] = ""  # what to try when a config cannot fit in memory
    # the fields that name a row of its report.json `results` (a grid point, a claim) rather
    # than measure something: `jaxcl compare` matches two reports' rows by them, in this order
    id_fields: ClassVar[tuple[str, ...]] = ()

    # ---- pure functions (jit/vmap/scan-able), one config at a time
    def init(self, static, hp):
        raise NotImplementedError

    def run_chunk(self, static, hp, state):
        raise NotImplementedError

    def final_arrays(self, state) -> dict:
        raise NotImplementedError

    def final_scalars(self, state) -> dict:
        return {}

    def final_observables(self, static, hp, state) -> dict:
        return {}

    # ---- host-side hooks
    def finalize(self, cfg, arrays: dict) -> dict:
        """One config's final arrays (numpy) as written to its npz: e.g. padding rows cut."""
        return arrays

    def describe(self, static) -> str:
        """A group's label in progress bars and logs."""
        return f"{self.name}"

    def config_bytes(self, static) -> int:
        """Rough float32 working set of one config's step (sizes CPU vmap blocks)."""
        return 1 << 20

    def after_run(self, run_dir: str, finals: list[dict]) -> None:
        """Called once a sweep is finished (process 0), with the final json of every config of
        this experiment that finished: e.g. a figure in the run directory."""

    def report(self, run_dir: str, finals: list[dict], options: dict) -> list[Section]:
        """This experiment's sections of `jaxcl report`, computed from the run directory's plain
        files; it changes nothing passed in and writes nothing (the engine writes `files`).

        Args:
          run_dir: the run directory.
          finals: the final json of every config of this experiment that finished (maybe none).
          options: the values of its `report_arguments` flags, by argparse dest (None where
            not given); refused with ConfigError where invalid.

        Returns:
          Its sections in report order; an experiment that holds an entry in report.json even
          when it has nothing to say returns one empty Section.
        """
        return []

    def report_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Adds this experiment's flags to `jaxcl report` (their values reach `report`'s
        `options`)."""

    def commands(self) -> dict[str, Command]:
        """Extra `jaxcl` subcommands."""
        return {}

    def __repr__(self) -> str:
        return f"<experiment {self.name}>"


_REGISTRY: dict[str, Experiment] = {}
_DEFAULT: str | None = None  # the name set_default chose


def register(experiment: Experiment) -> Experiment:
    """Adds an experiment under its name (one line per experiment in jaxcl/experiments)."""
    if experiment.name in _REGISTRY and _REGISTRY[experiment.name] is not experiment:
        raise ValueError(f"experiment {experiment.name!r} registered twice")
    _REGISTRY[experiment.name] = experiment
    return experiment


def set_default(name: str) -> None:
    """Names the experiment of a config (or a final json) that has no `experiment` field; set
    once, where the experiments register (jaxcl/experiments/__init__.py)."""
    global _DEFAULT
    get(name)
    if _DEFAULT is not None and _DEFAULT != name:
        raise ValueError(f"default experiment set twice: {_DEFAULT!r}, then {name!r}")
    _DEFAULT = name


def default() -> str:
    """The name of the default experiment (see `set_default`)."""
    if _DEFAULT is None:
        raise ConfigError("no field 'experiment', and no default experiment is registered")
    return _DEFAULT


def get(name: Any) -> Experiment:
    """The registered experiment of that name; an unknown name is refused, naming it."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ConfigError(
            f"field 'experiment' = {name!r}: expected one of {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


def names() -> list[str]:
    return sorted(_REGISTRY)


def of(cfg) -> Experiment:
    """The experiment a config belongs to."""
    return get(cfg.experiment)
