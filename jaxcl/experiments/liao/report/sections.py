"""Liao's report: which sections a run directory gets, in order. Each section is computed by its
module of this package from the run directory's plain files (final/*.json with observables,
results.jsonl, manifest.json, init_stats.json) and returned as a Section; nothing is written
here."""

from __future__ import annotations

import json
import os

from jaxcl.engine.protocol import Section
from jaxcl.errors import ConfigError
from jaxcl.experiments.liao.report import (
    attention,
    claims,
    eta,
    figures,
    long_run,
    losses,
    pruning,
    scaling,
    stages,
)


def report(run_dir: str, finals: list[dict], options: dict) -> list[Section]:
    """Liao's sections of `jaxcl report`.

    Args:
      run_dir: the run directory (final/*.json with observables, results.jsonl), and/or a
        directory holding init_stats.json.
      finals: the final json of every finished config of this experiment.
      options: `init_stats`: path(s) of init_stats.json files to include (default
        RUN_DIR/init_stats.json where it exists; each gets an init section, and the claims
        read them past the sweep's d); `trend`: a report.json of a sweep over d to set a long
        run's final values beside.

    Returns:
      The sections in report order; one empty Section where there is nothing to report (no
      finished configs, no init statistics), which keeps a `liao` entry in report.json.

    Raises:
      ConfigError: a given init_stats path is not a file.
    """
    given = options.get("init_stats")
    given = [given] if isinstance(given, str) else list(given or [])
    for p in given:
        if not os.path.isfile(p):
            raise ConfigError(
                f"--init-stats {p!r}: no such file (an init_stats.json written "
                "by `jaxcl init-stats --out DIR`)"
            )
    paths = given or [os.path.join(run_dir, "init_stats.json")]
    stats = [_load(p) for p in paths if os.path.exists(p)]
    if not finals and not stats:
        return [Section()]
    out = _trained(run_dir, finals, stats, options.get("trend")) if finals else []
    for i, st in enumerate(stats):
        out.append(
            scaling.init_section(st, "init_scaling.png" if i == 0 else f"init_scaling_{i + 1}.png")
        )
    return out


def _trained(
    run_dir: str, finals: list[dict], stats: list[dict], trend: str | None
) -> list[Section]:
    """The sections of the finished configs, each where the run holds its data: a sweep over
    d, over η, over prune fractions or losses, a long run at one d, frozen against trained
    attention."""
    ds = sorted({f["d"] for f in finals})
    out = [
        Section(
            [
                "# Liao et al.: training dynamics under imbalance",
                "",
                f"{len(finals)} finished configs; d ∈ {ds}; ratios "
                f"{sorted({f['ratio'] for f in finals})}; prune fractions "
                f"{sorted({f['prune_fraction'] for f in finals})}; losses "
                f"{sorted({losses.loss_label(f) for f in finals})}; seeds per point "
                f"{sorted({f['seed'] for f in finals})}.",
                "",
            ]
        )
    ]
    every = finals
    if len({bool(f.get("train_attention")) for f in finals}) == 2:
        # the other sections read the paper's model (frozen attention) only
        finals = [f for f in finals if not f.get("train_attention")]
    if len(ds) >= 2:
        windows = claims.windows(os.path.join(run_dir, "results.jsonl"), finals)
        out.extend(claims.claims_section(finals, windows=windows, init_stats=stats))
    if every is not finals:
        out.append(attention.attention_section(every))
    if len({f["eta"] for f in finals}) >= 2:
        out.append(eta.eta_section(finals))
    out.append(stages.stages_section(finals))
    if long_run.is_long(finals):
        out.append(long_run.long_run_section(run_dir, finals, trend))
    if len(ds) >= 2:
        out.append(scaling.scaling_section(finals))
    if len({f["prune_fraction"] for f in finals}) >= 2:
        out.append(pruning.pruning_section(finals))
    if len({losses.loss_label(f) for f in finals}) >= 2:
        out.append(losses.loss_section(finals))
    out.append(figures.figures_section(run_dir, finals))
    return out


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)
