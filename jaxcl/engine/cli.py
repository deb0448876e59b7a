"""Command line: `jaxcl run SWEEP.toml --out RUN_DIR [--set field=value]...`,
`jaxcl report RUN_DIR`, and the subcommands each experiment adds (listed below)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys

# what `jaxcl run` calls once it has parsed its arguments; re-exported for scripts and tests
from jaxcl.engine.launch import compile_cache, cpu_devices, run_sweep, split_cpu  # noqa: F401
from jaxcl.engine.options import RunOptions, parse_shard  # noqa: F401


def _parser() -> argparse.ArgumentParser:
    # jax may be imported here, but no backend starts before XLA_FLAGS is set in _run.
    from jaxcl.engine import precision, protocol, runflags
    from jaxcl.engine.options import BATCHINGS

    matmul = dict(
        default=None,
        metavar="P",
        help="the float32 matmul precision of every compiled program: "
        + ", ".join(precision.CHOICES)
        + ' (default: [sweep] matmul_precision, else "highest"; "tensorfloat32" or "default" '
        "let a recent NVIDIA GPU use TF32, about 1e-3 relative). A run option: config ids "
        "stay; each invocation records it",
    )

    ap = argparse.ArgumentParser(prog="jaxcl", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run (or continue) a sweep into a run directory")
    runflags.add(run, matmul)
    pla = sub.add_parser(
        "plan",
        help="what a sweep will cost, before it is queued: configs, "
        "shape groups, compiles, memory, steps, an estimated wall time from a "
        "short calibration, a job array's time and legs per task (writes "
        "nothing)",
    )
    pla.add_argument("sweep")
    pla.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    pla.add_argument("--max-parallel", type=int, default=None)
    pla.add_argument("--batching", choices=BATCHINGS, default=None)
    pla.add_argument("--chunk-seconds", type=float, default=None, metavar="S")
    pla.add_argument("--cpu-devices", type=int, default=None, metavar="N")
    pla.add_argument("--matmul-precision", **matmul)
    pla.add_argument(
        "--array",
        type=int,
        default=None,
        metavar="N",
        help="the time per task of a job array of N tasks (--shard auto)",
    )
    pla.add_argument(
        "--time",
        type=float,
        default=None,
        metavar="MINUTES",
        help="with --array: each leg's time limit (sbatch --time), for the legs per task",
    )
    pla.add_argument(
        "--signal-seconds",
        type=float,
        default=120.0,
        metavar="S",
        help="with --time: the warning's offset (--signal=B:USR1@S; default 120)",
    )
    pla.add_argument("--no-calibrate", action="store_true", help="no compile, no time estimate")
    pla.add_argument(
        "--device-memory",
        default=None,
        metavar="SIZE|KIND",
        help="plan for one device this machine does not have: its memory (80G) or a kind "
        "(h100, h100-pcie, h200, a100); blocks and memory are sized against it, and the wall "
        "time is an estimate from an assumed share of its float32 peak until calibrated on it",
    )
    mer = sub.add_parser(
        "merge",
        help="write results.jsonl, the manifest and the figures from "
        "a run directory's finished configs (after a job array's tasks)",
    )
    mer.add_argument("run_dir")
    sta = sub.add_parser(
        "status",
        help="configs pending/running/done/failed, steps, rate, ETA "
        "(read-only: works while a run goes)",
    )
    sta.add_argument("run_dir")
    sta.add_argument("--json", action="store_true", help="print the status as JSON")
    rep = sub.add_parser("report", help="write RUN_DIR/report.md and its PNG plots")
    rep.add_argument(
        "run_dir", help="a run directory, or a directory of other files an experiment reports on"
    )
    rep.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="write report.md, report.json, the PNGs and a copy of sweep.toml "
        "here instead of RUN_DIR (e.g. results/<study>/)",
    )
    for name in protocol.names():  # each experiment's own flags, named in their help
        protocol.get(name).report_arguments(rep)
    cmp = sub.add_parser(
        "compare",
        help="two reports of one study side by side (e.g. "
        "results/<study> and its rerun elsewhere): verdicts and intervals; "
        "exit 1 when a verdict differs",
    )
    cmp.add_argument("a", metavar="REPORT_A", help="report.json, or the directory holding it")
    cmp.add_argument("b", metavar="REPORT_B")
    cmp.add_argument(
        "--out", default=None, metavar="PATH", help="also write the table (markdown) here"
    )
    for name in protocol.names():
        for cmd, spec in protocol.get(name).commands().items():
            p = sub.add_parser(cmd, help=f"{spec.help} [{name}]")
            spec.add_arguments(p)
            p.set_defaults(experiment_command=spec.run)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    args.argv = argv  # to print the resume command after an interruption
    from jaxcl.engine.rundir import RunDirBusy
    from jaxcl.errors import ConfigError
    from jaxcl.fileio import DiskFullError

    try:
        if args.cmd == "run":
            return _run(args)
        if args.cmd == "plan":
            return _plan(args)
        if args.cmd == "merge":
            from jaxcl.engine import runner

            runner.merge(args.run_dir)
            return 0
        if args.cmd == "status":
            from jaxcl.engine import status

            st = status.status(args.run_dir)
            print(json.dumps(st, indent=1) if args.json else status.format_status(st), flush=True)
            return 0
        if args.cmd == "report":
            from jaxcl.engine import report

            engine = ("cmd", "argv", "run_dir", "out")  # the rest are experiments' flags
            options = {k: v for k, v in vars(args).items() if k not in engine}
            path = report.write_report(args.run_dir, options, out=args.out)
            print(f"jaxcl: report -> {path}", flush=True)
        elif args.cmd == "compare":
            return _compare(args)
        elif getattr(args, "experiment_command", None) is not None:
            import time

            from jaxcl.engine import records

            started, t0 = time.strftime("%Y-%m-%d %H:%M:%S %Z"), time.perf_counter()
            # what the command records about itself (protocol.Command: args.provenance())
            args.provenance = lambda: records.provenance(started, t0)
            return args.experiment_command(args)
    except ConfigError as e:  # includes RunDirError
        print(f"jaxcl: error: {e}", file=sys.stderr)
        return 2
    except RunDirBusy as e:
        print(f"jaxcl: error: {e}", file=sys.stderr)
        return 4
    except DiskFullError as e:
        print(
            f"jaxcl: error: {e.strerror}. Free some space and rerun the same command to continue.",
            file=sys.stderr,
            flush=True,
        )
        return 3
    return 0


def _compare(args) -> int:
    from jaxcl.engine import compare
    from jaxcl.fileio import write_text

    rows = compare.compare(compare.load(args.a), compare.load(args.b))
    lines = compare.table(rows, args.a, args.b)
    print("\n".join(lines), flush=True)
    if args.out:
        write_text(args.out, "\n".join(lines) + "\n")
    return 0 if all(r["agree"] for r in rows if r["kind"] == "verdict") else 1


def _plan(args) -> int:
    import math

    from jaxcl.engine import sweep as sweep_mod
    from jaxcl.errors import ConfigError

    options = _options(args)
    if args.array is not None and args.array < 1:
        raise ConfigError(f"--array = {args.array}: must be >= 1")
    for name in ("time", "signal_seconds"):
        v = getattr(args, name)
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise ConfigError(f"--{name.replace('_', '-')} = {v}: must be a finite number >= 0")
    if args.device_memory is not None:
        from jaxcl.engine import devices

        devices.target(args.device_memory)  # refused before the sweep is read
    sw = sweep_mod.load(args.sweep, args.set)
    split_cpu(cpu_devices(sweep_mod.Work.of(sw), options.cpu_devices))  # as `jaxcl run` would
    import jax

    jax.config.update("jax_enable_compilation_cache", False)  # the plan writes nothing
    from jaxcl.engine import plan

    plan.plan(
        sw,
        options,
        array=args.array,
        time_limit=args.time,
        signal_seconds=args.signal_seconds,
        calibrate_time=not args.no_calibrate,
        device=args.device_memory,
    )
    return 0


def _options(args) -> RunOptions:
    """The RunOptions of the parsed flags (those of `jaxcl run`, or the subset `jaxcl plan`
    takes), validated before any backend starts."""
    given = {name: getattr(args, name) for name in RunOptions.names() if hasattr(args, name)}
    if hasattr(args, "no_progress"):
        given["progress"] = False if args.no_progress else None
    if hasattr(args, "no_lock"):
        given["lock"] = not args.no_lock
    return RunOptions(**given)


def _run(args) -> int:
    from jaxcl.engine.signals import StopSignal

    with StopSignal.early():  # SIGTERM or Slurm's warning before training: a recorded stop
        return _run_sweep(args)


def _run_sweep(args) -> int:
    from jaxcl.engine import sweep as sweep_mod
    from jaxcl.engine.signals import Interrupted

    import numpy as np

    options = _options(args)  # every option and config validated before jax starts
    sw = sweep_mod.load(args.sweep, args.set)
    try:
        summary = run_sweep(sw, args.out, options, log=lambda m: print(m, flush=True))
    except Interrupted as e:
        if (e.requeue or "").startswith("requeued"):
            print(f"jaxcl: {e}; {e.requeue}", file=sys.stderr, flush=True)
        else:
            print(
                f"jaxcl: {e}."
                + (f"\njaxcl: {e.requeue}" if e.requeue is not None else "")
                + "\njaxcl: to resume, run the same command again:\n  "
                f"{shlex.join(['jaxcl'] + list(args.argv))}",
                file=sys.stderr,
                flush=True,
            )
        return 128 + e.signum
    import jax

    done, failed = len(summary.done), len(summary.failed)
    if jax.process_count() > 1:  # each process counts the configs it wrote
        from jax.experimental import multihost_utils

        done, failed = (
            int(x)
            for x in np.sum(
                multihost_utils.process_allgather(np.asarray([done, failed], np.int32)), axis=0
            )
        )
    if jax.process_index() == 0:  # one summary for the whole job
        print(
            f"jaxcl: {done} done, {len(summary.skipped)} already done, "
            f"{failed} failed in {summary.seconds:.1f}s -> {args.out}",
            flush=True,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
