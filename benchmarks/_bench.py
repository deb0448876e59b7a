"""Throughput, roofline and scaling of jaxcl's training step (issue 6); the logic behind
`benchmarks/throughput.py`.

What is measured, for each d (at C_m = 1.5, so m = round(d^1.5), d1 = 2d) and n_configs:

- engine: the engine's own path, `programs.compiled(EXPERIMENT, static, programs.config_mesh())` with its
  default batching (`programs.resolve_batching`), on n configs that differ in seed, split into
  the blocks `jaxcl run` would use (`programs.plan_blocks`) and padded as it pads (padding rows
  train no step; they cost time under vmap only). The config axis is sharded over every device; on CPU each device runs
  its configs one after another (batching "sequential"), on accelerators all at once ("vmap").
- vmapped: the same with batching "vmap", i.e. jit(vmap(run_chunk)) sharded over the devices,
  in blocks sized to a cache-friendly working set on CPU (one measurement with the engine
  where vmap is the default).
- loop: a Python loop over the same n configs, one jitted, unvmapped `run_chunk` at a time on
  the default device (dispatched asynchronously, one block at the end: the most favourable way
  to run a loop).
- All run `steps` training steps per call (one chunk, `log_every = steps`), and are timed
  interleaved in the same process; each figure is the median of `repeats` samples, a sample
  being as many calls in a row as make up at least `min_sample_s` (set from the warm-up call).
  Compile time (lower + compile) is measured separately.
- matmul peak, measured in the same run: a large square float32 matmul (the roofline), and a
  batched matmul of the step's own shape, n × (K·L, d1) @ (d1, m), timed interleaved with the
  step (what XLA reaches on these shapes alone).
- memory: `compiled.memory_analysis()` of the engine's chunk (arguments + outputs +
  temporaries − aliased), and the process's peak RSS.

FLOP model per config-step (K samples, L tokens, d features, d1 ambient dim, m neurons);
elementwise work (BReLU, softmax, RNG, the update) is not counted:

    forward, both views       2 · (2 K L d1 m)
    backward, anchor view     2 K L d1 m          (∂W only: StopGrad view and H need none)
    attention, both views     2 · (4 K L² d1)     (X Xᵀ and softmax(·) X per sample)
    InfoNCE logits + grad     2 · (2 K² m)        (Fa Fbᵀ and ∂Fa = ∂S Fb)
    sampling matmul           2 · (2 K L d d1)    (Z Mᵀ per view; 0 with dictionary="identity")

The roofline figure is achieved FLOP/s (model FLOPs × config-steps/s) over the measured peak.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import math
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl.engine import programs
from jaxcl.experiments.liao import EXPERIMENT, model, train
from jaxcl.experiments.liao.config import Config, stack_hparams

from _bench_tools import (  # noqa: F401
    Options,
    _configs,
    _memory,
    _rss_mb,
    _square_matmul,
    _time,
    _time_calls,
    chunk_per_device,
    fit_exponents,
    flops_per_config_step,
    machine_info,
    matmul_peak,
    run_chunks,
    write_result,
)


def _engine(cfgs: list[Config], sharding, batching: str) -> dict:
    """The engine's own path for these configs: `programs.plan_blocks` and `programs.compiled` with
    this batching, blocks padded as `jaxcl run` pads them. Returns a timed callable and what
    it cost to compile."""
    static = cfgs[0].static()
    blocks = programs.plan_blocks(cfgs, sharding, batching=batching)
    init_fn, chunk_fn = programs.compiled(EXPERIMENT, static, sharding, batching=batching)
    parts, progs, seconds = [], {}, 0.0
    for block, n_pad in blocks:
        hp = jax.tree.map(
            lambda x: programs.global_array(x, sharding), programs.block_hparams(block, n_pad)
        )
        parts.append([hp, init_fn(hp)])
        if n_pad not in progs:
            t = time.perf_counter()
            progs[n_pad] = chunk_fn.lower(hp, parts[-1][1]).compile()
            seconds += time.perf_counter() - t

    def call():
        outs = []
        for part in parts:
            part[1], metrics = progs[part[0].seed.shape[0]](part[0], part[1])
            outs.append(metrics["loss"])
        return parts[-1][1].w, outs

    return {
        "call": call,
        "compile_s": seconds,
        "n_pad": blocks[0][1],
        "blocks": [len(b) for b, _ in blocks],
        "mem": _memory(progs[blocks[0][1]]),
    }


def bench_one(opt: Options, d: int, n: int, sharding, big: int) -> dict:
    """Times the engine (its default batching), the engine with vmap batching and the loop on
    n configs of size d, interleaved. On accelerators the default batching is vmap and the two
    engine columns are one measurement."""
    cfgs = _configs(opt, d, n)
    static = cfgs[0].static()
    auto = programs.resolve_batching("auto")
    engines = {"engine": _engine(cfgs, sharding, auto)}
    engines["vmapped"] = engines["engine"] if auto == "vmap" else _engine(cfgs, sharding, "vmap")

    # The loop: one unvmapped jitted chunk, the same compiled program for every config.
    hps = [jax.tree.map(lambda x: jnp.asarray(x[0]), stack_hparams([c])) for c in cfgs]
    opts = programs.compiler_options()  # the loop gets the engine's compiler options too
    one_init = jax.jit(functools.partial(train.init, static), compiler_options=opts)
    one_chunk = jax.jit(
        functools.partial(train.run_chunk, static), donate_argnums=(1,), compiler_options=opts
    )
    states = [one_init(h) for h in hps]
    t = time.perf_counter()
    l_compiled = one_chunk.lower(hps[0], states[0]).compile()
    compile_l = time.perf_counter() - t

    # The step's batched matmul shape alone: n × (K·L, d1) @ (d1, m).
    K, L, d1, m = static.K, static.L, static.d1, static.m
    n_pad = engines["engine"]["n_pad"]
    rng = np.random.default_rng(1)
    xs = jnp.asarray(rng.standard_normal((n_pad, K * L, d1)), jnp.float32)
    ws = jnp.asarray(rng.standard_normal((n_pad, m, d1)), jnp.float32)
    bmm = jax.jit(lambda x, w: jnp.einsum("nrd,nmd->nrm", x, w))
    jax.block_until_ready(bmm(xs, ws))

    box = {"l": states}

    def run_l():
        outs = []
        for i in range(n):
            box["l"][i], metrics = l_compiled(hps[i], box["l"][i])
            outs.append(metrics["loss"])
        return box["l"][-1].w, outs

    square = _square_matmul(big)
    fns = {
        "engine": engines["engine"]["call"],
        "loop": run_l,
        "bmm": lambda: bmm(xs, ws),
        "square": square,
    }
    if engines["vmapped"] is not engines["engine"]:
        fns["vmapped"] = engines["vmapped"]["call"]
    # Warm-up, which also sets how many calls one timed sample makes: at least min_sample_s of
    # work, so that short calls (small d, n = 1) are not timed at the scheduler's granularity.
    calls = {k: max(1, math.ceil(opt.min_sample_s / _time(f))) for k, f in fns.items()}
    times = {k: [] for k in fns}
    for _ in range(opt.repeats):  # interleaved, so all of them see the same machine load
        for k, f in fns.items():
            times[k].append(_time_calls(f, calls[k]))
    med = {k: float(np.median(v)) for k, v in times.items()}
    med.setdefault("vmapped", med["engine"])
    fl = flops_per_config_step(K, L, static.d, d1, m, opt.dictionary == "identity")
    cs = {k: n * opt.steps / med[k] for k in ("engine", "vmapped", "loop")}
    return {
        "d": d,
        "m": m,
        "d1": d1,
        "K": K,
        "L": L,
        "n_configs": n,
        "n_padded": n_pad,
        "batching": auto,
        "engine_blocks": engines["engine"]["blocks"],
        "vmapped_blocks": engines["vmapped"]["blocks"],
        "steps_per_call": opt.steps,
        "engine_cfg_steps_per_s": cs["engine"],
        "vmapped_cfg_steps_per_s": cs["vmapped"],
        "loop_cfg_steps_per_s": cs["loop"],
        "speedup": cs["engine"] / cs["loop"],
        "vmapped_speedup": cs["vmapped"] / cs["loop"],
        "engine_s_per_cfg_step": 1 / cs["engine"],
        "vmapped_s_per_cfg_step": 1 / cs["vmapped"],
        "loop_s_per_cfg_step": 1 / cs["loop"],
        "compile_engine_s": engines["engine"]["compile_s"],
        "compile_vmapped_s": engines["vmapped"]["compile_s"],
        "compile_loop_s": compile_l,
        "flops_per_cfg_step": fl,
        "engine_flops_per_s": fl["total"] * cs["engine"],
        "vmapped_flops_per_s": fl["total"] * cs["vmapped"],
        "loop_flops_per_s": fl["total"] * cs["loop"],
        "shape_matmul_flops_per_s": 2 * n_pad * K * L * d1 * m / med["bmm"],
        "square_matmul_flops_per_s": 2 * big**3 / med["square"],
        "mem_engine_bytes": engines["engine"]["mem"],
        "mem_vmapped_bytes": engines["vmapped"]["mem"],
        "mem_loop_bytes": _memory(l_compiled),
        "rss_peak_mb": _rss_mb(),
    }


UNTUNED = "step compiled with XLA's defaults (not a part: compare with step)"


def breakdown(opt: Options, d: int, n: int, repeats: int | None = None) -> dict:
    """Seconds per vmapped step spent in each part of `train.step`, timed apart (interleaved,
    median), over n configs of size d: where the step's time goes besides the FLOP model.

    "step" is a `run_chunk` call divided by its steps (state updated in place, as in training;
    it includes the chunk's observables); the parts are jitted alone, so "rest" (by difference)
    also absorbs what fusion across the parts saves.
    """

    cfgs = _configs(opt, d, n)
    static = cfgs[0].static()
    hp = stack_hparams(cfgs)
    state = jax.jit(jax.vmap(functools.partial(train.init, static)))(hp)
    dtype = jnp.dtype(static.matmul_dtype)

    def sample(hp, st):
        return train.batch(static, hp, st, train._DATA, st.t)[:2]

    def forward(w, ha, hb):
        return (
            model.preactivations_by_neuron(w, ha, dtype),
            model.preactivations_by_neuron(w, hb, dtype),
        )

    def backward(dpre, ha):
        return model.weight_grad_by_neuron(dpre, ha, dtype)

    opts = programs.compiler_options()
    V = lambda f: jax.jit(jax.vmap(f), compiler_options=opts)  # noqa: E731
    xa, xb = V(sample)(hp, state)
    ha, hb = V(lambda a, b: (model.attention(a), model.attention(b)))(xa, xb)
    pre, _ = V(forward)(state.w, ha, hb)
    parts = {
        "step": (V(functools.partial(train.run_chunk, static)), (hp, state)),
        UNTUNED: (jax.jit(jax.vmap(functools.partial(train.run_chunk, static))), (hp, state)),
        "sampling (both views)": (V(sample), (hp, state)),
        "attention (both views)": (
            V(lambda a, b: (model.attention(a), model.attention(b))),
            (xa, xb),
        ),
        "forward matmuls (both views)": (V(forward), (state.w, ha, hb)),
        "backward matmul (anchor view)": (V(backward), (pre, ha)),
    }
    if static.prune:  # groups without pruning skip the mask (a static field)
        parts["prune mask"] = (V(lambda w, k: model.prune_mask(w, k)), (state.w, hp.n_prune))
    for f, a in parts.values():
        jax.block_until_ready(f(*a))
    times = {k: [] for k in parts}
    for _ in range(repeats or max(opt.repeats, 7)):
        for k, (f, a) in parts.items():
            times[k].append(_time(f, *a))
    out = {k: float(np.median(v)) for k, v in times.items()}
    out["step"] /= static.log_every
    out[UNTUNED] /= static.log_every
    out["rest (BReLU, InfoNCE, update, bias; by difference)"] = out["step"] - sum(
        v for k, v in out.items() if k not in ("step", UNTUNED)
    )
    return out


def _estimate(opt: Options, d: int, n: int, peak: float) -> tuple[float, float]:
    """(seconds to time the combo at 25% of the peak measured at start, rough bytes)."""
    c = _configs(opt, d, 1)[0]
    fl = flops_per_config_step(c.K, c.L, d, c.D1, c.M_neurons, opt.dictionary == "identity")
    seconds = 3 * (opt.repeats + 1) * n * opt.steps * fl["total"] / (0.25 * peak)
    act = 12 * c.K * c.L * (c.M_neurons + c.D1) * 4  # a dozen (K, L, m + d1) float32 buffers
    state = 3 * c.M_neurons * c.D1 * 4
    return seconds, n * (act + state)


def run(opt: Options, log=print) -> dict:
    """The whole benchmark: prints a table as it goes, returns the results (JSON-ready)."""
    info = machine_info()
    log(
        f"jaxcl throughput benchmark on backend={info['backend']} "
        f"({info['n_devices']} x {info['device_kind']}; {info['cpu']}; jax {info['jax']})"
    )
    sharding = programs.config_mesh()
    big = 4096 if info["backend"] != "cpu" else 2048
    peak0 = matmul_peak(big, opt.repeats)
    log(f"float32 matmul peak ({big}x{big}): {peak0 / 1e9:.1f} GFLOP/s")
    rows, skipped = [], []
    batching = programs.resolve_batching("auto")
    hdr = (
        f"{'d':>4} {'m':>5} {'n':>3} | {'engine':>9} {'vmapped':>9} {'loop':>9} {'x':>5} "
        f"{'x_vmap':>6} | {'comp_e':>6} {'comp_l':>6} | {'GFLOP/s':>7} {'%peak':>5} "
        f"{'%bmm':>5} | {'mem_MB':>7} {'rss_MB':>7}"
    )
    log(
        f"config-steps/s (median) of the engine (batching={batching}, as `jaxcl run`), the "
        "engine with vmap batching and the loop; x = engine/loop, x_vmap = vmapped/loop; "
        "compile s; the engine's FLOP/s vs the square matmul (%peak) and vs the step's batched "
        "matmul shape alone (%bmm); the engine's memory (memory_analysis) and peak RSS"
    )
    log(hdr)
    for d in opt.ds:
        for n in opt.ns:
            secs, nbytes = _estimate(opt, d, n, peak0)
            combo = opt
            if secs > opt.time_budget_s:  # fewer steps per call before giving up on a combo
                steps = max(2, int(opt.steps * opt.time_budget_s / secs))
                combo = dataclasses.replace(opt, steps=steps)
                secs, nbytes = _estimate(combo, d, n, peak0)
            if nbytes > opt.mem_budget_gb * 2**30 or secs > opt.time_budget_s:
                why = (
                    f"est. {nbytes / 2**30:.1f} GB > {opt.mem_budget_gb} GB"
                    if nbytes > opt.mem_budget_gb * 2**30
                    else f"est. {secs:.0f} s > {opt.time_budget_s:.0f} s budget"
                )
                skipped.append({"d": d, "n_configs": n, "reason": why})
                log(f"{d:>4} {'':>5} {n:>3} | skipped: {why}")
                continue
            # fewer configs than devices: as many devices as configs, as `jaxcl run` picks
            sh = sharding if n >= sharding.mesh.size else programs.config_mesh(n)
            r = bench_one(combo, d, n, sh, big)
            r["pct_peak"] = 100 * r["engine_flops_per_s"] / r["square_matmul_flops_per_s"]
            r["pct_shape_matmul"] = 100 * r["engine_flops_per_s"] / r["shape_matmul_flops_per_s"]
            rows.append(r)
            mem = r["mem_engine_bytes"]
            log(
                f"{d:>4} {r['m']:>5} {n:>3} | {r['engine_cfg_steps_per_s']:>9.1f} "
                f"{r['vmapped_cfg_steps_per_s']:>9.1f} "
                f"{r['loop_cfg_steps_per_s']:>9.1f} {r['speedup']:>5.2f} "
                f"{r['vmapped_speedup']:>6.2f} | "
                f"{r['compile_engine_s']:>6.1f} {r['compile_loop_s']:>6.1f} | "
                f"{r['engine_flops_per_s'] / 1e9:>7.1f} {r['pct_peak']:>5.1f} "
                f"{r['pct_shape_matmul']:>5.1f} | "
                f"{(mem or 0) / 2**20:>7.1f} {r['rss_peak_mb']:>7.0f}"
                + (f"  ({combo.steps} steps per call)" if combo.steps != opt.steps else "")
            )
    peak1 = matmul_peak(big, opt.repeats)
    log(
        f"float32 matmul peak again: {peak1 / 1e9:.1f} GFLOP/s (each row's %peak uses the "
        f"{big}x{big} matmul timed interleaved with that row)"
    )
    parts = None
    if opt.breakdown:
        bd, bn = opt.breakdown
        parts = breakdown(opt, bd, bn)
        fl = flops_per_config_step(
            64, 4, bd, 2 * bd, round(bd**opt.C_m), opt.dictionary == "identity"
        )["total"]
        log(f"time per vmapped step at d={bd}, n={bn} ({bn} x {fl / 1e6:.1f} MFLOP), by part:")
        for k, v in parts.items():
            log(f"  {k:<52} {v * 1e3:8.2f} ms  {100 * v / parts['step']:5.1f}%")
    exps = fit_exponents(rows)
    for key, e in exps.items():
        log(
            f"time per config-step ~ d^{e['exponent']:.2f} ({key}, n={e['n_configs']}, d={e['ds']})"
        )
    return {
        "info": info,
        "options": dataclasses.asdict(opt),
        "command": " ".join(sys.argv),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "matmul_peak_flops_per_s": {"size": big, "before": peak0, "after": peak1},
        "flop_model": __doc__[__doc__.index("FLOP model") :].strip(),
        "rows": rows,
        "skipped": skipped,
        "d_exponents": exps,
        "breakdown_s_per_step": parts
        and {"d": opt.breakdown[0], "n_configs": opt.breakdown[1], **parts},
    }


def save(result: dict, out_dir: str) -> str:
    return write_result(result, out_dir, f"{result['info']['machine']}.json")
