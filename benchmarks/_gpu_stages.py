"""benchmarks/gpu_run.py's bench, precision and science-plan stages (each in its own process)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
import tomllib
from typing import TYPE_CHECKING

from _gpu_env import _now, _write

if TYPE_CHECKING:
    from _gpu import Sizes

REGIME = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sweeps", "theorem33-regime.toml"
)


def bench_stage(out: str, sizes: Sizes) -> dict:
    """bench.json: per d, the engine's config-steps/s with as many configs vmapped as fit (up
    to the size's cap) against the batched PyTorch peer of benchmarks/peers.py on the same
    device and configs, interleaved; FLOP/s from benchmarks/_bench.py's model as a share of the
    card's float32 and TF32 peaks; and a square float32 matmul at each precision. Written after
    each d, so a stage stopped at its budget leaves what it measured."""
    import jax

    from jaxcl.engine import devices

    kind = devices.detect(jax.devices()[0].device_kind)
    try:
        import torch
    except ImportError:
        torch = None
    on_gpu = jax.default_backend() == "gpu"
    tdev = "cuda" if torch is not None and on_gpu and torch.cuda.is_available() else "cpu"
    result = {
        "date_utc": _now(),
        "device_kind": jax.devices()[0].device_kind,
        "known_kind": dataclasses.asdict(kind) if kind else None,
        "jax": jax.__version__,
        "torch": getattr(torch, "__version__", None),
        "torch_device": tdev if torch is not None else None,
        "torch_float32_matmul": _torch_matmul_setting(torch),
        "matmul_flops_per_s": matmul_rates(sizes.matmul_size, sizes.precisions),
        "rows": [],
    }
    print(f"square float32 matmul FLOP/s: {result['matmul_flops_per_s']}", flush=True)
    _write(out, "bench.json", result)
    for d, cap in sizes.bench_configs:
        row = bench_row(d, cap, sizes, torch, tdev, kind)
        result["rows"].append(row)
        _write(out, "bench.json", result)
    return result


def _torch_matmul_setting(torch) -> dict | None:
    """How torch runs float32 matmuls on CUDA (its default: full float32, no TF32)."""
    if torch is None:
        return None
    m = torch.backends.cuda.matmul
    return {"allow_tf32": m.allow_tf32, "fp32_precision": str(getattr(m, "fp32_precision", "?"))}


def matmul_rates(size: int, precisions: tuple, repeats: int = 5) -> dict:
    """FLOP/s of a (size, size) @ (size, size) float32 matmul at each matmul precision."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcl.engine.precision import pinned

    a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size)), jnp.float32)
    rates = {}
    for p in precisions:
        f = jax.jit(pinned(lambda x: x @ x, p))
        jax.block_until_ready(f(a))
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            jax.block_until_ready(f(a))
            times.append(time.perf_counter() - t)
        rates[p] = 2 * size**3 / float(np.median(times))
    return rates


def bench_row(d: int, cap: int, sizes: Sizes, torch, tdev: str, kind) -> dict:
    """One d of bench_stage."""
    import jax
    import numpy as np

    import _bench
    import peers
    from jaxcl.engine import programs
    from jaxcl.experiments.liao import EXPERIMENT, train

    sharding = programs.config_mesh()
    probe = dataclasses.replace(_bench._configs(_bench.Options(), d, 1)[0], **dict(sizes.shape))
    static = probe.static()
    flops = _bench.flops_per_config_step(
        static.K, static.L, d, static.d1, static.m, probe.dictionary == "identity"
    )["total"]
    fit = programs.auto_max_parallel(static, probe, sharding, batching="vmap")
    n = max(2, min(cap, fit or cap))
    rate = 0.3 * kind.f32_flops if kind else 2e10  # a guess, only to size the timed calls
    steps = int(min(50, max(2, sizes.bench_call_seconds * rate / (n * flops))))
    cfgs = [
        dataclasses.replace(c, **dict(sizes.shape))
        for c in _bench._configs(_bench.Options(steps=steps), d, n)
    ]
    ((block, n_pad),) = programs.plan_blocks(cfgs, sharding, max_parallel=n, batching="vmap")
    hp = jax.tree.map(
        lambda x: programs.global_array(x, sharding), programs.block_hparams(block, n_pad)
    )
    init_fn, chunk_fn = programs.compiled(EXPERIMENT, static, sharding, batching="vmap")
    t = time.perf_counter()
    state = jax.block_until_ready(init_fn(hp))
    chunk = chunk_fn.lower(hp, state).compile()
    compile_s = time.perf_counter() - t
    mem = _bench._memory(chunk)
    box = [state]

    def engine():
        box[0], metrics = chunk(hp, box[0])
        jax.block_until_ready(metrics["loss"])

    fns = {"engine": engine}
    row = {"d": d, "m": static.m, "d1": static.d1, "K": static.K, "L": static.L}
    row.update(configs=n, configs_fit=fit, configs_cap=cap, steps_per_call=steps)
    if torch is not None:
        first = jax.tree.map(lambda x: np.asarray(x[0]), state)
        c0 = cfgs[0]
        xa, xb, _ = train.batch(static, c0.hparams(), first, train._DATA, 0)
        row["torch_check"] = peers.check(torch, c0, first, xa, xb, device=tdev)
        p = np.asarray(peers._presence(c0))  # the seeds' configs share it
        peer = peers.Peer(
            torch,
            [c.resolved() for c in cfgs],
            np.array(state.M[:n]),
            np.repeat(p[None], n, axis=0),
            np.array(state.w[:n]),
            device=tdev,
        )

        def torch_batched():
            for _ in range(steps):
                peer.step(*peer.batch())
            if tdev == "cuda":
                torch.cuda.synchronize()

        fns["torch_batched"] = torch_batched
    for f in fns.values():
        f()  # warm: the engine's donated state, torch's kernels and allocator
    times = {k: [] for k in fns}
    for _ in range(sizes.bench_repeats):  # interleaved: the device's state hits all alike
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    rates = {k: n * steps / float(np.median(v)) for k, v in times.items()}
    row.update(
        compile_s=round(compile_s, 2),
        memory_bytes=mem,
        flops_per_config_step=flops,
        config_steps_per_s=rates,
        flops_per_s={k: r * flops for k, r in rates.items()},
        pct_f32_peak={k: 100 * r * flops / kind.f32_flops for k, r in rates.items()}
        if kind
        else None,
        pct_tf32_peak={k: 100 * r * flops / kind.tf32_flops for k, r in rates.items()}
        if kind
        else None,
        seconds=times,
    )
    print(
        f"d={d}: {n} configs ({fit or 'no'} fit), {steps} steps per call, compile "
        f"{compile_s:.1f} s; config-steps/s "
        + ", ".join(f"{k} {v:,.0f}" for k, v in rates.items()),
        flush=True,
    )
    return row


def precision_stage(out: str, sizes: Sizes) -> dict:
    """precision.json: the same configs trained for N steps by the engine at each matmul
    precision; seconds per chunk, the precision the compiled chunk's dots carry, and how far
    each precision's trained w and b end from "highest"'s."""
    import jax
    import numpy as np

    from jaxcl.engine import programs
    from jaxcl.experiments.liao import EXPERIMENT
    from jaxcl.experiments.liao.config import Config

    n, steps = sizes.precision_configs, sizes.precision_steps
    log_every = max(1, steps // 4)
    shape = dict(sizes.shape)
    cfgs = [
        Config(d=sizes.precision_d, C_m=1.5, steps=steps, log_every=log_every, seed=s, **shape)
        for s in range(n)
    ]
    static, sharding = cfgs[0].static(), programs.config_mesh()
    ((block, n_pad),) = programs.plan_blocks(cfgs, sharding, max_parallel=n, batching="vmap")
    hp = jax.tree.map(
        lambda x: programs.global_array(x, sharding), programs.block_hparams(block, n_pad)
    )
    runs = {}
    for p in sizes.precisions:
        init_fn, chunk_fn = programs.compiled(
            EXPERIMENT, static, sharding, batching="vmap", precision=p
        )
        state = init_fn(hp)
        t = time.perf_counter()
        lowered = chunk_fn.lower(hp, state)
        chunk = lowered.compile()
        compile_s = time.perf_counter() - t
        asked = sorted(set(re.findall(r"precision = \[(\w+), \w+\]", lowered.as_text())))
        compiled = sorted(set(_precision_attributes(chunk.as_text())))
        times, loss = [], None
        for _ in range(-(-steps // log_every)):
            t = time.perf_counter()
            state, metrics = chunk(hp, state)
            loss = np.asarray(metrics["loss"])
            times.append(time.perf_counter() - t)
        runs[p] = {
            "compile_s": round(compile_s, 2),
            "lowered_dot_precisions": asked,
            "compiled_precision_attributes": compiled,
            "seconds_per_chunk": float(np.median(times[1:] or times)),
            "final_loss": loss[:n].tolist(),
            "arrays": {k: np.asarray(getattr(state, k))[:n] for k in ("w", "b")},
        }
        print(
            f"{p}: {runs[p]['seconds_per_chunk'] * 1e3:.1f} ms per chunk; dots traced at "
            f"{asked}, compiled with {compiled}",
            flush=True,
        )
    ref = runs[sizes.precisions[0]]["arrays"]
    result = {
        "date_utc": _now(),
        "device_kind": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "configs": n,
        "d": sizes.precision_d,
        "m": static.m,
        "d1": static.d1,
        "steps": steps,
        "steps_per_chunk": log_every,
        "reference": sizes.precisions[0],
        "runs": {},
    }
    for p, r in runs.items():
        diff = {}
        for k, v in r.pop("arrays").items():
            delta = np.abs(v.astype(np.float64) - ref[k])
            diff[k] = {
                "max_abs": float(delta.max()),
                "max_abs_over_max": float(delta.max() / max(np.abs(ref[k]).max(), 1e-30)),
                "rel_frobenius": float(
                    np.linalg.norm(delta) / max(np.linalg.norm(ref[k].astype(np.float64)), 1e-30)
                ),
            }
        result["runs"][p] = {**r, "difference_from_reference": diff}
    _write(out, "precision.json", result)
    return result


def _precision_attributes(hlo: str) -> list[str]:
    """The precision and algorithm attributes in a compiled program's HLO text: a dot's
    `operand_precision={...}`, and on GPU the backend config of the library call a dot became
    (`"operand_precision":[...]`, `"algorithm":"..."`)."""
    pattern = r'(operand_precision=\{[^}]*\}|"operand_precision":\[[^\]]*\]|"algorithm":"\w+")'
    return re.findall(pattern, hlo)


def regime_slice(d: int, seeds: int, control: bool = True, source: str = REGIME) -> str:
    """A sweep file: sweeps/theorem33-regime.toml's [base] at one d, its arm inside the proof's
    weight-decay hypothesis (lam = 1/(4 d Xi_2) rounded down to two digits) and, with
    `control`, its control arm (jaxcl's default lam), seeds 0..seeds-1 each."""
    from jaxcl.experiments.liao import theory

    with open(source, "rb") as f:
        base = tomllib.load(f)["base"]
    cap = 1 / (4 * d * theory.xi2(d, base["C_m"], base["ratio"]))
    lam = math.floor(cap / 10 ** (math.floor(math.log10(cap)) - 1)) * 10 ** (
        math.floor(math.log10(cap)) - 1
    )
    seed_list = list(range(seeds))
    lines = [
        f"# A slice of sweeps/theorem33-regime.toml at d = {d}, {seeds} seed(s) per arm, written",
        "# by benchmarks/gpu_run.py: its [base]; lam <= 1/(4 d Xi_2) rounded down to two digits"
        + (" and the control arm (jaxcl's default lam)" if control else ""),
        "",
        "[base]",
        *(f"{k} = {_toml(v)}" for k, v in base.items()),
    ]
    if control:
        lines += ["", "[[grid]]", f"d = [{d}]", f"seed = {seed_list}"]
    lines += ["", "[[grid]]", f"d = [{d}]", f"lam = [{float(f'{lam:.2g}')!r}]"]
    lines += [f"seed = {seed_list}", ""]
    return "\n".join(lines)


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


def science_plan_stage(work: str, sizes: Sizes, deadline: float) -> dict:
    """science-plan.json and the sweep file of the science run: the largest slice of the regime
    sweep (largest d, then most seeds, both arms before one) whose `jaxcl plan` estimate,
    calibrated on this device, ends before `deadline` (epoch seconds) less the run's start-up.
    """
    import jax

    from jaxcl.engine import plan, programs, protocol
    from jaxcl.engine.options import CHUNK_SECONDS
    from jaxcl.engine.sweep import group_by_static, loads

    sharding = programs.config_mesh()
    batching = programs.resolve_batching("auto")
    tried, chosen = [], None
    for d in sizes.science_ds:
        cands = [(s, True) for s in sizes.science_seeds] + [(min(sizes.science_seeds), False)]
        texts = [regime_slice(d, s, control) for s, control in cands]
        configs = loads(texts[0]).configs()
        t = time.perf_counter()
        cal = {
            k: plan.calibrate(g, sharding, batching) for k, g in group_by_static(configs).items()
        }
        calibration_s = time.perf_counter() - t
        for (seeds, control), text in zip(cands, texts):
            est = plan.estimate(loads(text).configs(), sharding, batching, None, CHUNK_SECONDS, cal)
            left = deadline - time.time() - STARTUP_SECONDS
            entry = {
                "d": d,
                "seeds": seeds,
                "control_arm": control,
                "configs": len(loads(text).configs()),
                "estimated_seconds": round(est["seconds"], 1),
                "seconds_left": round(left, 1),
                "calibration": {
                    f"{k[0]} {protocol.get(k[0]).describe(k[1])}": v for k, v in cal.items()
                },
                "calibration_seconds": round(calibration_s, 1),
            }
            tried.append(entry)
            print(
                f"d={d}, {seeds} seed(s) per arm{'' if control else ', lam arm only'}: "
                f"estimated {est['seconds']:.0f} s, {left:.0f} s left",
                flush=True,
            )
            if est["seconds"] <= left:
                chosen = entry
                break
        if chosen:
            break
    result = {
        "date_utc": _now(),
        "device_kind": jax.devices()[0].device_kind,
        "batching": batching,
        "tried": tried,
        "chosen": chosen,
        "sweep": None,
    }
    if chosen:
        path = os.path.join(work, f"theorem33-regime-d{chosen['d']}-slice.toml")
        with open(path, "w") as f:
            f.write(regime_slice(chosen["d"], chosen["seeds"], chosen["control_arm"]))
        result["sweep"] = path
    _write(work, "science-plan.json", result)
    return result


# `jaxcl run`'s own start (imports, devices) before its first compile
STARTUP_SECONDS = 15.0
