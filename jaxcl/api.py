"""The Python API (`jaxcl.run`, `jaxcl.open`, `jaxcl.experiment`): run a sweep as `jaxcl run`
does, read a run directory as pandas tables, and look up a registered experiment, from a
notebook or a script."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import numpy as np

from jaxcl.engine.rundir import RunDir
from jaxcl.engine.signals import Interrupted
from jaxcl.errors import ConfigError
from jaxcl.fileio import read_jsonl


def run(sweep: str | os.PathLike | dict, out: str | os.PathLike, **options) -> "Run":
    """Runs (or continues) a sweep into a run directory, exactly as `jaxcl run` does.

    The lock, resume, `--shard` slices and checkpoints behave as on the command line (one code
    path: `jaxcl.engine.launch.run_sweep`). Stopping it (Ctrl-C, the notebook's stop button) saves
    a checkpoint at the end of the current chunk and raises KeyboardInterrupt; calling it again
    with the same arguments resumes.

    Args:
      sweep: a sweep TOML file's path, a TOML string, or a dict of the same shape
        ({"base": {...}, "grid": {...}} or "grid": [{...}, ...] for `[[grid]]`, optional
        "sweep": {...}); a dict is written to RUN_DIR/sweep.toml as TOML.
      out: the run directory.
      **options: `set` (a dict {field: value} or a list of "field=value"), and the options of
        `jaxcl run`, named as its flags with underscores (`jaxcl.engine.options.RunOptions`):
        `max_parallel`, `batching`, `force_new`, `shard` ("I/N" or "auto"), `progress`
        (default: on in a notebook or a terminal), `lock` (False is `--no-lock`),
        `compile_cache`, `cpu_devices`, `checkpoint_every_steps`, `checkpoint_every_seconds`,
        `keep_checkpoints`, `chunk_seconds`, `matmul_precision`, `requeue`, `coordinator`,
        `num_processes`, `process_id`, `distributed`.

    Returns:
      The run directory as a `Run`; its `summary` says what was done, skipped and failed.

    Raises:
      ConfigError: bad sweep or option (naming the field and value), before anything compiles.
      RunDirBusy: another run holds the directory's lock.
      DiskFullError: no space left to write a checkpoint or a result (what was written is
        intact; calling it again with space continues).
      Interrupted: stopped by SIGTERM or Slurm's SIGUSR1, after saving a checkpoint.
      KeyboardInterrupt: stopped by SIGINT, after saving a checkpoint.
      TypeError: an unknown option.
    """
    from jaxcl.engine import launch
    from jaxcl.engine.options import RunOptions

    known = RunOptions.names()
    unknown = sorted(set(options) - set(known) - {"set"})
    if unknown:
        raise TypeError(
            f"jaxcl.run: unknown option(s) {', '.join(map(repr, unknown))}; "
            f"options: set, {', '.join(known)}"
        )
    sets = options.pop("set", None)
    if options.get("progress") is None:
        options["progress"] = _interactive()
    opts = RunOptions(**options)  # refused before the sweep is read, as on the command line
    sw = load_sweep(sweep, sets)
    try:
        summary = launch.run_sweep(sw, os.fspath(out), opts)
    except Interrupted as e:
        if e.signum == signal.SIGINT:
            raise KeyboardInterrupt(
                f"jaxcl: {e}; call jaxcl.run again with the same arguments to resume"
            ) from None
        raise
    done = Run(out)
    done.summary = summary
    return done


def open(run_dir: str | os.PathLike) -> "Run":
    """Opens a run directory for reading: finished, running or partial; takes no lock.

    Raises:
      ConfigError: `run_dir` has no manifest.json (not a jaxcl run directory).
    """
    return Run(run_dir)


def experiment(name: str):
    """The registered experiment of that name (a `jaxcl.engine.protocol.Experiment`): its
    `Config` class and the pure functions the engine runs (`init`, `run_chunk`, ...).

    Raises:
      ConfigError: an unknown name, naming it and the registered names.
    """
    from jaxcl.engine import protocol

    if not isinstance(name, str) or name not in protocol.names():
        raise ConfigError(
            f"experiment {name!r}: not registered; the experiments: {', '.join(protocol.names())}"
        )
    return protocol.get(name)


def experiment_names() -> list[str]:
    """The names of the registered experiments, sorted (`jaxcl.experiment(name)` takes them)."""
    from jaxcl.engine import protocol

    return protocol.names()


class Run:
    """A run directory, read from its plain files (docs/run-directory.md) without its lock.

    Attributes:
      path: the run directory.
      summary: what `jaxcl.run` did (None for `jaxcl.open`).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.summary = None
        self._dir = RunDir(self.path)
        if not os.path.exists(self._dir.p("manifest.json")):
            raise ConfigError(
                f"run directory {self.path!r}: no manifest.json, not a jaxcl run "
                "directory (or not started yet)"
            )

    def __repr__(self) -> str:
        return f"jaxcl.Run({self.path!r})"

    @property
    def config_ids(self) -> list[str]:
        """Every config id of the sweep, in grid order (manifest.json)."""
        return self._dir.manifest()["config_ids"]

    def rows(self):
        """results.jsonl as a DataFrame: one row per config per logged chunk, every config field
        and metric a column. While a run goes (or after a killed one) results.jsonl lags
        behind; then the rows are read from rows/<id>.jsonl in grid order instead, which is
        what `jaxcl merge` would write.

        Returns:
          pandas.DataFrame.
        """
        import pandas as pd

        results, rows_dir = self._dir.p("results.jsonl"), self._dir.p("rows")
        fresh = os.path.exists(results)
        if fresh and os.path.isdir(rows_dir):
            newest = max(
                (e.stat().st_mtime_ns for e in os.scandir(rows_dir) if e.name.endswith(".jsonl")),
                default=-1,
            )
            fresh = newest <= os.stat(results).st_mtime_ns
        if fresh:
            records = read_jsonl(results)
        else:
            records = [r for cid in self.config_ids for r in self._dir.rows(cid)]
        return pd.DataFrame(records)

    def finals(self):
        """One row per finished config (final/<id>.json and .npz written), in grid order,
        indexed by config_id: every resolved config field, the final scalars, and the
        observables as columns (an observable whose name is already a column, e.g. liao's T1,
        is `observables.<name>`). Array observables are lists, as in the json.

        Returns:
          pandas.DataFrame.
        """
        import pandas as pd

        records = []
        for cid in self.config_ids:
            if not self._dir.has_final(cid):
                continue
            info = self._dir.load_info(cid)
            for k, v in (info.pop("observables", None) or {}).items():
                info["observables." + k if k in info else k] = v
            info["config_id"] = cid
            records.append(info)
        if not records:
            return pd.DataFrame(index=pd.Index([], name="config_id"))
        return pd.DataFrame(records).set_index("config_id")

    def arrays(self, config_id: str) -> dict[str, np.ndarray]:
        """A finished config's final arrays (final/<config_id>.npz), loaded into memory.

        Raises:
          KeyError: the config has no final arrays (not finished, failed, or not in the sweep).
        """
        if not self._dir.has_final(config_id):
            known = config_id in self.config_ids
            raise KeyError(
                f"config {config_id!r} has no final arrays in {self.path!r} ("
                + ("not finished" if known else "not a config of this sweep")
                + ")"
            )
        return self._dir.load_arrays(config_id)

    def status(self) -> dict:
        """What `jaxcl status RUN_DIR --json` prints (`jaxcl.engine.status.status`)."""
        from jaxcl.engine import status

        return status.status(self.path)

    def report(
        self,
        out: str | os.PathLike | None = None,
        *,
        init_stats: str | list | None = None,
        trend: str | None = None,
    ) -> str:
        """Writes report.md, report.json and the PNGs, as `jaxcl report RUN_DIR [--out OUT]`.

        Args:
          out: where to write them (default: the run directory).
          init_stats, trend: liao's `--init-stats` and `--trend` (see `jaxcl report --help`).

        Returns:
          The path of report.md.
        """
        from jaxcl.engine import report

        return report.write_report(
            self.path,
            {"init_stats": init_stats, "trend": trend},
            out=None if out is None else os.fspath(out),
        )


def load_sweep(sweep: str | os.PathLike | dict, sets: dict | list[str] | None = None):
    """A Sweep from a TOML path, a TOML string or a dict of the same shape, with `--set`
    overrides ({field: value} or ["field=value", ...]); a dict is validated as its TOML is.

    Raises:
      ConfigError: naming the field and value.
    """
    from jaxcl.engine import sweep as sweep_mod

    if isinstance(sets, dict):
        sets = [f"{k}={_toml_literal(v, f'set {k!r}')}" for k, v in sets.items()]
    sets = list(sets or [])
    if isinstance(sweep, dict):
        text, source = sweep_toml(sweep), "<sweep dict>"
    elif isinstance(sweep, str) and not os.path.isfile(sweep) and ("\n" in sweep or "=" in sweep):
        text, source = sweep, "<sweep string>"
    else:
        return sweep_mod.load(os.fspath(sweep), sets)
    return sweep_mod.loads(text, dict(sweep_mod.parse_set(s) for s in sets), source=source)


def sweep_toml(doc: dict) -> str:
    """The TOML text of a sweep given as a dict (`tomllib.loads` of it gives the dict back, numpy
    scalars and arrays and tuples as their Python numbers and lists), written by tomli_w.

    Raises:
      ConfigError: a value TOML cannot hold (None, an object) or a key that is not a string,
        naming where it is.
    """
    import tomli_w

    return tomli_w.dumps(_plain(doc, "sweep dict"))


def _plain(v: Any, where: str) -> Any:
    """`v` with numpy scalars and arrays, tuples and ranges as the Python values TOML holds.

    Raises:
      ConfigError: a value TOML cannot hold, or a key that is not a string.
    """
    if isinstance(v, dict):
        for k in v:
            if not isinstance(k, str):
                raise ConfigError(f"sweep dict: key {k!r}: keys must be strings")
        return {
            k: _plain(x, f"[{k}]" if where == "sweep dict" else f"{where} {k}")
            for k, x in v.items()
        }
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple, range, np.ndarray)):
        return [_plain(x, where) for x in v]
    raise ConfigError(
        f"sweep dict: {where} = {v!r}: a {type(v).__name__}, which a sweep "
        "cannot hold (numbers, strings, booleans, lists and tables)"
    )


def _toml_literal(v: Any, where: str) -> str:
    """A `--set` value as the TOML literal `sweep.parse_set` reads back."""
    import tomli_w

    return tomli_w.dumps({"v": _plain(v, where)}).split("=", 1)[1].strip()


def _interactive() -> bool:
    """A terminal, or a Jupyter kernel (tqdm.auto then draws a notebook bar)."""
    if sys.stderr.isatty():
        return True
    ipython = sys.modules.get("IPython")
    try:
        shell = ipython.get_ipython() if ipython is not None else None
    except Exception:  # pragma: no cover - an IPython too old or too odd to ask
        return False
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})
