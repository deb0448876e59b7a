"""Liao's report, the experiment's last stage: it reads a run directory's plain files and returns
the sections of `jaxcl report` (jaxcl.engine.protocol.Section).

- sections: which sections a run directory gets, in order (the entry point).
- claims, claim_rows, verdicts: Theorem 3.3 and Lemma C.1 claim by claim, and the rules that
  judge them.
- scaling: exponent tables and plots over d, and of init-only counts (`jaxcl init-stats`).
- stages, attention, eta, long_run, pruning, losses: the sections of the other studies.
- figures, plots: Figure 1 (also the run directory's figure1.png after a run) and the other PNGs.

This module itself holds only the flags of `jaxcl report` (imported by every `jaxcl` command).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Liao's flags of `jaxcl report`: `--init-stats` and `--trend` (options of
    `sections.report`)."""
    parser.add_argument(
        "--init-stats",
        default=None,
        metavar="PATH",
        nargs="+",
        help="liao: init_stats.json file(s) to include (default: "
        "RUN_DIR/init_stats.json); their counts and expectations extend Lemma "
        "C.1's claims past a sweep's d",
    )
    parser.add_argument(
        "--trend",
        default=None,
        metavar="REPORT_JSON",
        help="liao: the report.json of a sweep over d (e.g. "
        "results/theorem33-cpu/report.json) to set a long run's final values beside",
    )
