"""The geometry report's verdicts on p < C: a share of seeds against one half (with the seeds it
took, or would take), and the rule on rank G* against C − 1 that the per-case verdicts support.
Pure arithmetic on counts; rank.py gathers the counts from the finals."""

from __future__ import annotations

from jaxcl.tables import clopper_pearson

HALF = 0.5  # a share decides when its interval lies wholly above (reaches) or below this


def decided(ok: list[bool]) -> tuple[str, int | None]:
    """The verdict of a share against one half, and the seeds it took.

    Args:
      ok: per seed, in seed order, whether the run reached its target.

    Returns:
      ("reaches" | "does not" | "undecided", m): "reaches" when the Clopper–Pearson 95%
      interval of the share lies above 1/2, "does not" when below, and m the fewest seeds (the
      first m in seed order) from which on every longer prefix's interval stays on that side
      (None when undecided).
    """
    lo, hi = clopper_pearson(sum(ok), len(ok))
    side = 1 if lo > HALF else (-1 if hi < HALF else 0)
    if side == 0:
        return "undecided", None
    need = len(ok)
    for m in range(len(ok) - 1, 0, -1):
        lo, hi = clopper_pearson(sum(ok[:m]), m)
        if not ((side == 1 and lo > HALF) or (side == -1 and hi < HALF)):
            break
        need = m
    return ("reaches" if side == 1 else "does not"), need


def seeds_needed(x: int, n: int, limit: int = 100_000) -> int | None:
    """How many seeds an undecided share would take to decide, were the share to stay at x/n:
    the fewest m ≥ n whose Clopper–Pearson interval of round(m x/n)/m lies wholly on one side of
    one half (doubling, then bisection).

    Args:
      x, n: the measured share x/n.
      limit: give up above this many seeds.

    Returns:
      m, or None where x/n is one half to within 1/limit (no number of seeds decides it).
    """
    if abs(x / n - HALF) * limit <= 1:
        return None

    def side(m):
        lo, hi = clopper_pearson(round(m * x / n), m)
        return lo > HALF or hi < HALF

    lo, hi = n, n
    while not side(hi):
        lo, hi = hi, 2 * hi
        if hi > limit:
            return None
    while hi - lo > 1:  # side(lo) false (or lo = n), side(hi) true
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if side(mid) else (mid, hi)
    return hi if not side(n) else n


def rule(cases) -> str:
    """The rule the verdicts support, from the cases where rank G* < C − 1 (the ones that tell
    "p ≥ rank G*" from "p ≥ C − 1" apart).

    Args:
      cases: per case, a dict with `name`, `rank` (of G*), `C`, `verdicts` ({p: "reaches" |
        "does not" | "undecided"}) and `misses` ({p: {end-point verdict: count}}).

    Returns:
      One sentence: per case the smallest p from which every p tried reaches G*_p, and the
      smallest offset k such that "p ≥ rank G* + k" holds in every case, where one does;
      what stops training at p = rank G*; and whether that p is below C − 1 somewhere, which
      "p ≥ C − 1" would not allow.
    """
    if not cases:
        return "No case has rank G* < C − 1, so the data cannot tell rank G* from C − 1."
    if len({c.get("steps") for c in cases}) > 1:
        cases = [dict(c, name=f"{c['name']} ({c['steps']} steps)") for c in cases]
    parts, offsets, below_c1 = [], [], []
    for c in cases:
        vp, r = c["verdicts"], c["rank"]
        ok = [p for p in sorted(vp) if all(vp[q] == "reaches" for q in vp if q >= p)]
        p0 = ok[0] if ok else None
        # p = 1 does not train (normalized 1-d features cannot move), so a rank-1 case tried from
        # p = 2 on counts as reaching from rank G* + 1 only
        offsets.append(None if p0 is None else p0 - r)
        if p0 is not None and p0 < c["C"] - 1:
            below_c1.append(f"{c['name']} from p = {p0} < C − 1 = {c['C'] - 1}")
        words = ", ".join(f"p = {p}: {vp[p]}" for p in sorted(vp))
        parts.append(f"{c['name']} (rank G* = {r}, C − 1 = {c['C'] - 1}): {words}")
    n = len(cases)
    at_rank = {
        v: sum(c["misses"].get(c["rank"], {}).get(v, 0) for c in cases)
        for v in sorted({v for c in cases for v in c["misses"].get(c["rank"], {})})
    }
    tried = [c for c in cases if c["rank"] in c["verdicts"]]
    if None in offsets:
        head = (
            f"{offsets.count(None)} of {n} do not reach G*_p (or are undecided) at the largest p "
            "tried, so the data state no rule of the form p ≥ rank G* + k"
        )
    else:
        k = max(offsets)
        at = "rank G*" + (f" + {k - 1}" if k > 1 else "")
        last = [c for c, o in zip(cases, offsets) if o == k]
        short = [
            f"{c['name']} {c['verdicts'][c['rank'] + k - 1]}"
            for c in last
            if c["rank"] + k - 1 in c["verdicts"]
        ]
        untried = [c["name"] for c in last if c["rank"] + k - 1 not in c["verdicts"]]
        head = f"every case reaches G*_p at every p ≥ rank G*{f' + {k}' if k else ''} tried" + (
            ", so the data support p ≥ rank G*"
            if k == 0
            else f". At p = {at}: "
            + "; ".join(
                (["; ".join(short)] if short else [])
                + (
                    [
                        ", ".join(untried)
                        + " not trained there"
                        + (
                            " (p = 1 does not train: normalized 1-d features cannot move)"
                            if any(c["rank"] + k - 1 == 1 for c in last)
                            else ""
                        )
                    ]
                    if untried
                    else []
                )
            )
            + f". The rule the data support is p ≥ rank G* + {k}"
        )
    if below_c1:
        head += ", and the threshold is not C − 1: " + "; ".join(below_c1)
    if tried and at_rank:
        head += (
            f". At p = rank G* ({len(tried)} case{'s' * (len(tried) > 1)}) the runs that miss G*_p end at "
            + ", ".join(f"{v} ({m})" for v, m in at_rank.items())
        )
    return f"In the {n} cases with rank G* < C − 1, {head}. Per case: " + "; ".join(parts) + "."
