"""`jaxcl report RUN_DIR`: assembles report.md from the sections of each experiment whose configs
finished in the run directory (reading only its plain files)."""

from __future__ import annotations

import glob
import json
import os
import shutil

from jaxcl.engine import protocol
from jaxcl.errors import ConfigError
from jaxcl.fileio import write_json, write_text


def load_finals(run_dir: str) -> list[dict]:
    """Every final/<id>.json that carries an `observables` key."""
    out = []
    for path in sorted(glob.glob(os.path.join(run_dir, "final", "*.json"))):
        with open(path) as f:
            info = json.load(f)
        if "observables" in info:
            out.append(info)
    return out


def write_report(run_dir: str, options: dict | None = None, out: str | None = None) -> str:
    """Writes report.md, report.json and the experiments' PNGs; returns the report's path.

    Args:
      run_dir: a run directory.
      options: passed to every experiment's `report` (e.g. liao's `init_stats` path).
      out: where to write them (default run_dir), e.g. results/<study>/ for a report that is
        committed without the run directory; the sweep file is copied there too.

    Returns:
      Path of report.md.

    Raises:
      ConfigError: `out` is a file; an `init_stats` path is not a file; no experiment found
        anything to report.
    """
    out = out or run_dir
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out = {out!r}: is a file, not a directory")
    given = (options or {}).get("init_stats")
    for p in [given] if isinstance(given, str) else list(given or []):
        if not os.path.isfile(p):
            raise ConfigError(
                f"--init-stats {p!r}: no such file (an init_stats.json written "
                "by `jaxcl init-stats --out DIR`)"
            )
    os.makedirs(out, exist_ok=True)
    finals = load_finals(run_dir)
    by_exp: dict[str, list[dict]] = {}
    for f in finals:  # run directories written before the protocol hold liao configs
        by_exp.setdefault(f.get("experiment", protocol.DEFAULT), []).append(f)
    unknown = sorted(set(by_exp) - set(protocol.names()))
    if unknown:
        raise ConfigError(
            f"run directory {run_dir!r}: configs of unknown experiment(s) "
            f"{unknown}; known: {', '.join(protocol.names())}"
        )
    manifest = {}
    if os.path.exists(os.path.join(run_dir, "manifest.json")):
        with open(os.path.join(run_dir, "manifest.json")) as f:
            manifest = json.load(f)
    lines = [f"# jaxcl report: {os.path.basename(os.path.abspath(run_dir))}", ""]
    lines += provenance(manifest)
    opts = {**(options or {}), "out_dir": out, "summary": {}}
    wrote = False
    for name in protocol.names():
        wrote |= bool(protocol.get(name).report(run_dir, by_exp.get(name, []), lines, opts))
    if not wrote:
        raise ConfigError(
            f"run directory {run_dir!r}: nothing to report (no final/*.json with "
            "observables, and nothing else an experiment reads, e.g. "
            "init_stats.json)"
        )
    path = os.path.join(out, "report.md")
    write_text(path, "\n".join(lines) + "\n")
    write_json(
        os.path.join(out, "report.json"),
        {
            "run_dir": os.path.basename(os.path.abspath(run_dir)),
            "fingerprint_hash": manifest.get("fingerprint_hash"),
            "invocations": manifest.get("invocations", []),
            "results": opts["summary"],
        },
    )
    sweep = os.path.join(run_dir, "sweep.toml")
    if os.path.abspath(out) != os.path.abspath(run_dir) and os.path.exists(sweep):
        shutil.copyfile(sweep, os.path.join(out, "sweep.toml"))
    return path


def provenance(manifest: dict) -> list[str]:
    """Where the results come from: the sweep's fingerprint and every `jaxcl run` that wrote
    the run directory (command, machine, devices, wall time), from manifest.json."""
    if not manifest:
        return []
    out = [
        f"Sweep fingerprint `{manifest.get('fingerprint_hash', '?')}` (the hash of the sweep "
        "file's fields and overrides; the file itself is sweep.toml).",
        "",
    ]
    runs = manifest.get("invocations", [])
    if runs:
        total = sum(r.get("seconds", 0.0) for r in runs)
        out += [f"Written by {len(runs)} `jaxcl run` invocation(s), {total:.0f} s in all:", ""]
        for r in runs:
            extra = "".join(
                f"; resumed {x['configs']} configs from the checkpoint at step {x['step']}"
                for x in r.get("resumed") or []
            )
            if r.get("checkpoints"):
                extra += (
                    f"; saved {r['checkpoints']} checkpoint(s) in "
                    f"{r.get('checkpoint_seconds', 0):.1f} s"
                )
            env = r.get("environment") or {}
            if env:
                flags = f", XLA_FLAGS={env['xla_flags']}" if env.get("xla_flags") else ""
                extra += (
                    f"; jax {env.get('jax', '?')}, jaxlib {env.get('jaxlib', '?')}, "
                    f"{env.get('isa', '?')}{flags}"
                )
                if env.get("lock_differences"):
                    extra += "; not the lock's versions: " + ", ".join(env["lock_differences"])
            if r.get("environment_changed"):
                extra += (
                    "; **environment changed since the previous run** ("
                    + "; ".join(r["environment_changed"])
                    + "): configs resumed across it "
                    "are statistically, not bitwise, those of one run"
                )
            out.append(
                f"- {r.get('started', '?')}: `{r.get('command', '?')}` on {r.get('host', '?')}"
                f" ({r.get('cpu', '?')}; {r.get('devices', '?')}), {r.get('seconds', 0):.1f} s, "
                f"{r.get('outcome', '?')}{extra}; jaxcl {r.get('commit', '?')}"
            )
        out.append("")
    return out
