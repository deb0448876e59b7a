"""`jaxcl compare A B`: two reports of one study side by side (e.g. a committed results/<study>/
and its rerun on another machine): every verdict, and every interval with whether they overlap.

Knows no experiment: it walks the two report.json `results` trees, one entry per experiment. A
list's rows are matched by their identifying fields (`id_fields`: the experiment's own, declared
in its `Experiment.id_fields`); a dict with mean/lo/hi is an interval; a `verdict` (or `word`)
string is a verdict, which must be equal in both.
"""

from __future__ import annotations

import json
import math
import os

from jaxcl.engine import protocol
from jaxcl.errors import ConfigError

# Report.json conventions of every experiment, not fields of one: a row's experiment (a config
# field every experiment has) names it; a `verdict` or `word` string is a verdict.
ENGINE_ID_FIELDS = ("experiment",)
VERDICT_FIELDS = ("verdict", "word")


def id_fields(experiment: str | None = None) -> tuple[str, ...]:
    """The fields that name a row (a point of the grid, a claim) rather than measure something:
    the engine's, then the experiment's `id_fields` (every registered experiment's, in name
    order, for a tree that is not one experiment's entry)."""
    names = [experiment] if experiment in protocol.names() else protocol.names()
    out = list(ENGINE_ID_FIELDS)
    for name in names:
        out += [f for f in protocol.get(name).id_fields if f not in out]
    return tuple(out)


def load(path: str) -> dict:
    """A report's `results` tree, from report.json or the directory holding it."""
    if os.path.isdir(path):
        path = os.path.join(path, "report.json")
    try:
        with open(path) as f:
            return json.load(f)["results"]
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"report {path!r}: no report.json with results ({e})") from None


def compare(a: dict, b: dict) -> list[dict]:
    """Every verdict and interval of `a` beside `b`'s.

    Returns:
      Rows {path, kind ("verdict", "interval" or "missing"), a, b, agree}; `agree` is equality
      for a verdict, overlap for two 95% intervals, False where one side lacks the entry.
    """
    out: list[dict] = []
    for k in a:  # each experiment's entry, matched by its own fields
        if k in b:
            _walk(a[k], b[k], k, out, id_fields(k))
    return out


def _row_key(row: dict, fields: tuple[str, ...]) -> tuple:
    return tuple((k, json.dumps(row[k], sort_keys=True)) for k in fields if k in row)


def _name(row: dict, fields: tuple[str, ...]) -> str:
    return ", ".join(f"{k}={row[k]}" for k in fields if k in row)


def _interval(x) -> tuple[float, float, float] | None:
    if isinstance(x, dict) and {"mean", "lo", "hi"} <= set(x):
        return x["mean"], x["lo"], x["hi"]
    return None


def _fmt(iv) -> str:
    return (
        "—"
        if iv is None
        else "{:.3g} [{:.3g}, {:.3g}]".format(
            *(v if isinstance(v, (int, float)) and v is not None else math.nan for v in iv)
        )
    )


def _overlap(x, y) -> bool:
    (_, lo1, hi1), (_, lo2, hi2) = x, y
    if any(v is None or not math.isfinite(v) for v in (lo1, hi1, lo2, hi2)):
        return x[0] == y[0]
    return lo1 <= hi2 and lo2 <= hi1


def _walk(a, b, path: str, out: list, fields: tuple[str, ...]) -> None:
    if isinstance(a, list) and isinstance(b, list):
        if all(isinstance(r, dict) for r in a + b):
            index_b = {_row_key(r, fields): r for r in b}
            for r in a:
                other = index_b.pop(_row_key(r, fields), None)
                where = f"{path}[{_name(r, fields)}]"
                if other is None:
                    out.append(
                        {"path": where, "kind": "missing", "a": "present", "b": "—", "agree": False}
                    )
                else:
                    _walk(r, other, where, out, fields)
            for r in index_b.values():
                out.append(
                    {
                        "path": f"{path}[{_name(r, fields)}]",
                        "kind": "missing",
                        "a": "—",
                        "b": "present",
                        "agree": False,
                    }
                )
        return
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return
    ia, ib = _interval(a), _interval(b)
    if ia is not None and ib is not None:
        out.append(
            {
                "path": path,
                "kind": "interval",
                "a": _fmt(ia),
                "b": _fmt(ib),
                "agree": _overlap(ia, ib),
            }
        )
    if {"lo", "hi"} <= set(a) and ia is None:  # a row's own point estimate and interval
        pt = next((k for k in ("slope", "mean", "value") if k in a and k in b), None)
        if pt is not None:
            x, y = (a[pt], a["lo"], a["hi"]), (b[pt], b["lo"], b["hi"])
            out.append(
                {
                    "path": f"{path}.{pt}",
                    "kind": "interval",
                    "a": _fmt(x),
                    "b": _fmt(y),
                    "agree": _overlap(x, y),
                }
            )
    for k in VERDICT_FIELDS:
        if isinstance(a.get(k), str) or isinstance(b.get(k), str):
            out.append(
                {
                    "path": f"{path}.{k}",
                    "kind": "verdict",
                    "a": a.get(k, "—"),
                    "b": b.get(k, "—"),
                    "agree": a.get(k) == b.get(k),
                }
            )
    for k in a:
        if k in b and k not in VERDICT_FIELDS and isinstance(a[k], (dict, list)):
            _walk(a[k], b[k], f"{path}.{k}" if path else k, out, fields)


def table(rows: list[dict], a_name: str, b_name: str) -> list[str]:
    """Markdown: a count line, then every row (verdicts first)."""
    verdicts = [r for r in rows if r["kind"] == "verdict"]
    intervals = [r for r in rows if r["kind"] == "interval"]
    missing = [r for r in rows if r["kind"] == "missing"]
    lines = [
        f"{sum(r['agree'] for r in verdicts)}/{len(verdicts)} verdicts agree, "
        f"{sum(r['agree'] for r in intervals)}/{len(intervals)} intervals overlap, "
        f"{len(missing)} entries in one report only.",
        "",
        f"| entry | kind | {a_name} | {b_name} | agree |",
        "|---|---|---|---|---|",
    ]
    for r in verdicts + missing + intervals:
        lines.append(
            f"| {r['path']} | {r['kind']} | {r['a']} | {r['b']} | "
            f"{'yes' if r['agree'] else '**no**'} |"
        )
    return lines
