"""jaxcl's engine against the PyTorch a user would write instead (issue 16), side by side in one
process: a straightforward per-config training loop, and a batched version (configs stacked, one
autograd step for all; optionally under torch.compile).

    pip install -e .[bench]                    # torch (CPU), an optional extra
    .venv/bin/python benchmarks/peers.py --d 32 --n 16 --repeats 3

The peers implement the same model (SPEC §1-3): sparse-coding pairs (the same p_j, signs,
token positions, noise σ_ξ, dictionary M), identity attention, the bilateral-ReLU encoder, InfoNCE
with StopGrad on the second view, GD with weight decay, and the staged bias schedule (eq. 41, 67,
70). Before timing, each peer's loss and W-gradient on one jaxcl batch (same W, b, M) is checked
against jaxcl's `info_nce` and `jax.grad` of it, and printed. Times are config-steps/s, the median
of `--repeats` timed calls of `--steps` steps each, the three measured in turn in one process.
Prints a table and writes benchmarks/results/peers-<machine>.json.

    .venv/bin/python benchmarks/peers.py --sweep --d 32 --L 8 --n 16 --sweep-steps 2000

`--sweep` times whole processes instead, each started fresh (interpreter, imports, compile,
training, results written): `jaxcl run` of an n-config sweep (seeds 0..n-1, `--sweep-steps`
steps each, a cold compile cache) against a PyTorch script training the same configs one after
another (`torch_loop`) and all stacked at once (`torch_batched`), run in turn `--repeats` times.
The PyTorch scripts draw M and W(0) themselves (same distributions) and import no JAX.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time

from _peers_torch import Peer, _presence, check  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--n", type=int, nargs="+", default=[16])
    ap.add_argument("--L", type=int, default=4)
    ap.add_argument("--K", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50, help="steps per timed call")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile peer")
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument(
        "--sweep",
        action="store_true",
        help="time whole processes: jaxcl run of a sweep against PyTorch scripts",
    )
    ap.add_argument("--sweep-steps", type=int, default=2000, help="training steps per config")
    ap.add_argument(
        "--torch-worker", nargs=3, metavar=("MODE", "SPEC", "OUT"), help=argparse.SUPPRESS
    )  # internal: one PyTorch sweep process
    args = ap.parse_args()
    if args.torch_worker:
        return torch_worker(*args.torch_worker)
    if args.sweep:
        return sweep(args)
    sys.path.insert(0, ROOT)
    from jaxcl.engine.cli import split_cpu

    split_cpu(None)  # one JAX CPU device per core, as `jaxcl run` does
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        import torch
    except ImportError:
        sys.exit("benchmarks/peers.py needs PyTorch: pip install -e .[bench]")
    import _bench

    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    for d in args.d:
        for n in args.n:
            rows.append(bench(_bench, torch, d, n, args))
    result = {
        "machine": _bench.machine_info(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "args": vars(args),
        "rows": rows,
    }
    print(
        "wrote",
        _bench.write_result(result, args.out_dir, f"peers-{result['machine']['machine']}.json"),
    )


def bench(_bench, torch, d: int, n: int, args) -> dict:
    import jax
    import numpy as np

    from jaxcl.engine import programs
    from jaxcl.experiments.liao import train

    opt = _bench.Options(steps=args.steps, repeats=args.repeats)
    cfgs = [dataclasses.replace(c, L=args.L, K=args.K) for c in _bench._configs(opt, d, n)]
    states = [train.init(c.static(), c.hparams()) for c in cfgs]
    xa, xb, _ = train.batch(cfgs[0].static(), cfgs[0].hparams(), states[0], train._DATA, 0)
    chk = check(torch, cfgs[0], states[0], xa, xb)
    print(
        f"d={d} n={n}: peers' loss {chk['loss_torch']:.6f} vs jaxcl {chk['loss_jaxcl']:.6f} "
        f"(rel. diff {chk['loss_rel_diff']:.1e}); W-gradient max rel. diff "
        f"{chk['grad_rel_diff']:.1e}",
        flush=True,
    )
    assert chk["loss_rel_diff"] < 1e-4 and chk["grad_rel_diff"] < 1e-3, chk

    engine = _bench._engine(cfgs, programs.config_mesh(), programs.resolve_batching("auto"))
    jax.block_until_ready(engine["call"]())  # warm

    loop = [Peer.from_jaxcl(torch, [c], [s]) for c, s in zip(cfgs, states)]
    batched = Peer.from_jaxcl(torch, cfgs, states)

    def run_loop():
        for _ in range(args.steps):
            for p in loop:
                p.step(*p.batch())

    def run_batched(step):
        def run():
            for _ in range(args.steps):
                step(*batched.batch())

        return run

    peers = {"torch_loop": run_loop, "torch_batched": run_batched(batched.step)}
    compile_note = None
    if not args.no_compile:
        try:
            compiled_step = torch.compile(batched.step)
            t0 = time.perf_counter()
            compiled_step(*batched.batch())
            compile_note = f"compiled in {time.perf_counter() - t0:.1f} s"
            peers["torch_compiled"] = run_batched(compiled_step)
        except Exception as e:  # no C++ toolchain, unsupported op, ...
            compile_note = f"torch.compile failed here: {type(e).__name__}: {str(e)[:160]}"
        print(f"  torch.compile: {compile_note}", flush=True)
    for fn in peers.values():
        fn()  # warm
    times = {k: [] for k in ["engine", *peers]}
    for _ in range(args.repeats):  # interleaved: the machine's noise hits all alike
        t0 = time.perf_counter()
        jax.block_until_ready(engine["call"]())
        times["engine"].append(time.perf_counter() - t0)
        for k, fn in peers.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    rate = {k: n * args.steps / float(np.median(v)) for k, v in times.items()}
    row = {
        "d": d,
        "n": n,
        "K": args.K,
        "L": args.L,
        "m": cfgs[0].resolved()["m"],
        "steps": args.steps,
        "repeats": args.repeats,
        "check": chk,
        "torch_compile": compile_note,
        "config_steps_per_s": rate,
        "engine_over": {k: rate["engine"] / v for k, v in rate.items() if k != "engine"},
        "seconds": times,
    }
    print(
        "  config-steps/s: "
        + ", ".join(f"{k} {v:,.0f}" for k, v in rate.items())
        + "; engine / "
        + ", ".join(f"{k} {v:.1f}x" for k, v in row["engine_over"].items()),
        flush=True,
    )
    return row


SWEEP_TOML = """# written by benchmarks/peers.py --sweep
[base]
d = {d}
C_m = 1.5
K = {K}
L = {L}
steps = {steps}

[grid]
seed = {seeds}
"""


def torch_worker(mode: str, spec_path: str, out: str) -> None:
    """One PyTorch sweep process, as a user would write it: draws each config's dictionary
    M (Q of a Gaussian matrix) and W(0) ~ N(0, σ0² I) itself, then trains the configs one after
    another (mode "loop") or all stacked (mode "batched") and saves the final weights."""
    import numpy as np
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    with open(spec_path) as f:
        spec = json.load(f)
    resolved, steps = spec["resolved"], spec["steps"]
    Ms, ps, ws = [], [], []
    for r in resolved:
        gen = torch.Generator().manual_seed(r["seed"])
        q, rr = torch.linalg.qr(torch.randn(r["d1"], r["d1"], generator=gen))
        Ms.append((q * torch.sign(torch.diagonal(rr)))[:, : r["d"]].numpy())
        eps = np.where(np.arange(r["d"]) < r["n_major"], r["eps_max"], r["eps_min"])
        ps.append(np.minimum(1.0, eps * r["C_z"] * math.log(math.log(r["d"])) / r["d"]))
        sigma0 = math.sqrt(r["init_mass"] * r["tau"] / (r["d"] * r["m"] * r["d1"]))
        ws.append((sigma0 * torch.randn(r["m"], r["d1"], generator=gen)).numpy())
    groups = [[i] for i in range(len(resolved))] if mode == "loop" else [list(range(len(resolved)))]
    final = {}
    for g in groups:
        peer = Peer(
            torch,
            [resolved[i] for i in g],
            np.stack([Ms[i] for i in g]),
            np.stack([ps[i] for i in g]),
            np.stack([ws[i] for i in g]),
            seed=g[0],
        )
        for _ in range(steps):
            peer.step(*peer.batch())
        final.update({f"w_{i}": peer.w[j].numpy() for j, i in enumerate(g)})
    np.savez(out, **final)


def sweep(args) -> None:
    """Whole-process times: `jaxcl run` of the sweep against the PyTorch scripts, in turn."""
    import shutil
    import subprocess
    import tempfile

    import numpy as np

    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        import torch
    except ImportError:
        sys.exit("benchmarks/peers.py needs PyTorch: pip install -e .[bench]")
    import _bench
    from jaxcl.engine.sweep import load as load_sweep

    d, n, steps = args.d[0], args.n[0], args.sweep_steps
    work = tempfile.mkdtemp(prefix="jaxcl-peers-sweep-")
    toml = os.path.join(work, "sweep.toml")
    sweep_toml = SWEEP_TOML.format(d=d, K=args.K, L=args.L, steps=steps, seeds=list(range(n)))
    with open(toml, "w") as f:
        f.write(sweep_toml)
    cfgs = load_sweep(toml).configs()
    spec = os.path.join(work, "spec.json")
    with open(spec, "w") as f:
        json.dump({"resolved": [c.resolved() for c in cfgs], "steps": steps}, f)
    py, me = sys.executable, os.path.abspath(__file__)
    jaxcl = [py, "-m", "jaxcl", "run", toml, "--no-progress"]
    commands = {
        "jaxcl_run": lambda i: (
            jaxcl
            + [
                "--out",
                os.path.join(work, f"run{i}"),
                "--compile-cache",
                os.path.join(work, f"cache{i}"),
            ]
        ),
        "torch_loop": lambda i: [
            py,
            me,
            "--torch-worker",
            "loop",
            spec,
            os.path.join(work, f"loop{i}.npz"),
        ],
        "torch_batched": lambda i: [
            py,
            me,
            "--torch-worker",
            "batched",
            spec,
            os.path.join(work, f"batched{i}.npz"),
        ],
    }
    print(
        f"whole-process sweep: d={d}, L={args.L}, K={args.K}, {n} configs x {steps} steps; "
        f"{args.repeats} rounds, each command a fresh process (work dir {work})",
        flush=True,
    )
    times = {k: [] for k in commands}
    for i in range(args.repeats):
        for k, cmd in commands.items():
            t0 = time.perf_counter()
            proc = subprocess.run(cmd(i), cwd=ROOT, capture_output=True, text=True)
            times[k].append(time.perf_counter() - t0)
            if proc.returncode != 0:
                sys.exit(f"{k} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
            print(f"  round {i + 1}: {k} {times[k][-1]:.1f} s", flush=True)
    med = {k: float(np.median(v)) for k, v in times.items()}
    over = {k: med[k] / med["jaxcl_run"] for k in med if k != "jaxcl_run"}
    print(
        "median whole-process seconds: "
        + ", ".join(f"{k} {v:.1f}" for k, v in med.items())
        + "; jaxcl run is "
        + ", ".join(f"{v:.1f}x {k}" for k, v in over.items()),
        flush=True,
    )
    result = {
        "machine": _bench.machine_info(),
        "torch": torch.__version__,
        "torch_threads": os.cpu_count(),
        "args": vars(args),
        "command": " ".join(sys.argv),
        "sweep_toml": sweep_toml,
        "seconds": times,
        "median_s": med,
        "jaxcl_run_speedup": over,
        "config_steps": n * steps,
    }
    shutil.rmtree(work, ignore_errors=True)
    print(
        "wrote",
        _bench.write_result(
            result, args.out_dir, f"peers-sweep-{result['machine']['machine']}.json"
        ),
    )


if __name__ == "__main__":
    main()
