"""`jaxcl report RUN_DIR`: assembles report.md from the sections of each experiment whose configs
finished in the run directory (reading only its plain files)."""

from __future__ import annotations

import glob
import json
import os

from jaxcl.engine import protocol
from jaxcl.errors import ConfigError
from jaxcl.fileio import write_text


def load_finals(run_dir: str) -> list[dict]:
    """Every final/<id>.json that carries an `observables` key."""
    out = []
    for path in sorted(glob.glob(os.path.join(run_dir, "final", "*.json"))):
        with open(path) as f:
            info = json.load(f)
        if "observables" in info:
            out.append(info)
    return out


def write_report(run_dir: str, options: dict | None = None) -> str:
    """Writes RUN_DIR/report.md and the experiments' PNGs; returns the report's path.

    Args:
      run_dir: a run directory.
      options: passed to every experiment's `report` (e.g. liao's `init_stats` path).

    Returns:
      Path of report.md.

    Raises:
      ConfigError: no experiment found anything to report.
    """
    finals = load_finals(run_dir)
    by_exp: dict[str, list[dict]] = {}
    for f in finals:  # run directories written before the protocol hold liao configs
        by_exp.setdefault(f.get("experiment", protocol.DEFAULT), []).append(f)
    unknown = sorted(set(by_exp) - set(protocol.names()))
    if unknown:
        raise ConfigError(f"run directory {run_dir!r}: configs of unknown experiment(s) "
                          f"{unknown}; known: {', '.join(protocol.names())}")
    lines = [f"# jaxcl report: {os.path.basename(os.path.abspath(run_dir))}", ""]
    sweep = os.path.join(run_dir, "manifest.json")
    if os.path.exists(sweep):
        with open(sweep) as f:
            manifest = json.load(f)
        lines += [f"Sweep fingerprint `{manifest.get('fingerprint_hash', '?')}` "
                  f"(manifest.json; the sweep file is sweep.toml).", ""]
    wrote = False
    for name in protocol.names():
        wrote |= bool(protocol.get(name).report(run_dir, by_exp.get(name, []), lines,
                                                dict(options or {})))
    if not wrote:
        raise ConfigError(f"run directory {run_dir!r}: nothing to report (no final/*.json with "
                          "observables, and nothing else an experiment reads, e.g. "
                          "init_stats.json)")
    path = os.path.join(run_dir, "report.md")
    write_text(path, "\n".join(lines) + "\n")
    return path
