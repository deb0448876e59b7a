"""`jaxcl report RUN_DIR`: assembles report.md and report.json from the Sections every registered
experiment's report returns for the run directory (each reads only its plain files), then writes
them and the files the sections name."""

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
    """Writes report.md, report.json and the files the experiments' sections name.

    Every experiment's sections are computed first (an experiment refuses its own invalid
    options there); nothing is written unless all of them are.

    Args:
      run_dir: a run directory.
      options: the experiments' report options by name (their `report_arguments` flags);
        each experiment gets its own copy.
      out: where to write them (default run_dir), e.g. results/<study>/ for a report that is
        committed without the run directory; the sweep file is copied there too.

    Returns:
      Path of report.md.

    Raises:
      ConfigError: `out` is a file; an experiment refused its options; no experiment found
        anything to report.
    """
    out = out or run_dir
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out = {out!r}: is a file, not a directory")
    finals = load_finals(run_dir)
    by_exp: dict[str, list[dict]] = {}
    for f in finals:  # a final json without the field is the default experiment's
        name = f["experiment"] if "experiment" in f else protocol.default()
        by_exp.setdefault(name, []).append(f)
    unknown = sorted(set(by_exp) - set(protocol.names()))
    if unknown:
        raise ConfigError(
            f"run directory {run_dir!r}: configs of unknown experiment(s) "
            f"{unknown}; known: {', '.join(protocol.names())}"
        )
    sections = {
        name: protocol.get(name).report(run_dir, by_exp.get(name, []), dict(options or {}))
        for name in protocol.names()
    }
    if not any(s.lines for secs in sections.values() for s in secs):
        raise ConfigError(
            f"run directory {run_dir!r}: nothing to report (no final/*.json with "
            "observables, and none of the other files an experiment's report reads)"
        )
    manifest = {}
    if os.path.exists(os.path.join(run_dir, "manifest.json")):
        with open(os.path.join(run_dir, "manifest.json")) as f:
            manifest = json.load(f)
    lines = [f"# jaxcl report: {os.path.basename(os.path.abspath(run_dir))}", ""]
    lines += provenance(manifest)
    results: dict[str, dict] = {}
    os.makedirs(out, exist_ok=True)
    for name, secs in sections.items():
        if secs:  # an experiment that returned sections has an entry in `results`
            entry = results.setdefault(name, {})
            for sec in secs:
                lines += sec.lines
                entry.update(sec.summary)
                for file_name, write in sec.files:
                    write(os.path.join(out, file_name))
    path = os.path.join(out, "report.md")
    write_text(path, "\n".join(lines) + "\n")
    write_json(
        os.path.join(out, "report.json"),
        {
            "run_dir": os.path.basename(os.path.abspath(run_dir)),
            "fingerprint_hash": manifest.get("fingerprint_hash"),
            "invocations": manifest.get("invocations", []),
            "results": results,
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
                if r.get("matmul_precision"):
                    extra += f", float32 matmuls at {r['matmul_precision']!r}"
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
