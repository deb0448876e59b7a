#!/usr/bin/env python3
"""Two commands on a fresh machine with only Python: `python3 dev.py figure1` and
`python3 dev.py test` (ruff, the whole suite, then the numerics-marked tests under SSE4.2; CI's
run). `python3 dev.py test --fast` is the edit loop: ruff and every test not marked slow, in under
a minute on 2 cores. Each makes ./.venv and installs jaxcl[test] into it when needed, at the exact
versions of requirements.lock (`python3 dev.py lock` rewrites it)."""

import hashlib
import os
import platform
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(ROOT, ".venv")
BIN = os.path.join(VENV, "Scripts" if os.name == "nt" else "bin")
STAMP = os.path.join(VENV, ".jaxcl-installed")
LOCK = os.path.join(ROOT, "requirements.lock")
# JAXCL_UNLOCKED=1 installs the loose ranges of pyproject.toml instead (newest releases): what a
# `pip install jaxcl` user gets; results/ were made with the lock
UNLOCKED = os.environ.get("JAXCL_UNLOCKED", "") not in ("", "0")
PIP = ["-m", "pip", "install", "--disable-pip-version-check", "-q"]
# The second pass of `dev.py test`: the tests that compare numbers (marker `numerics`), compiled
# for SSE4.2 only, so that a result that holds only on this CPU's vector width fails here and
# not on a newcomer's machine (docs/engine.md, "Reproducing across machines").
OTHER_CPU = "--xla_cpu_max_isa=SSE4_2"


def ensure_venv() -> None:
    """(Re)installs when the venv is missing or pyproject.toml or the lock changed since."""
    h = hashlib.sha256()
    for path in ("pyproject.toml", "requirements.lock"):
        with open(os.path.join(ROOT, path), "rb") as f:
            h.update(f.read())
    want = h.hexdigest() + (" unlocked" if UNLOCKED else "")
    if os.path.exists(STAMP) and open(STAMP).read() == want:
        return
    if not os.path.exists(os.path.join(BIN, "python")):
        print(f"dev.py: creating {VENV}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    pins = [] if UNLOCKED else ["-c", LOCK]
    print(
        f"dev.py: installing jaxcl[test] ({'unlocked' if UNLOCKED else 'requirements.lock'}; "
        "first time only)",
        flush=True,
    )
    subprocess.run(
        [os.path.join(BIN, "python")] + PIP + pins + ["-e", ROOT + "[test]"], check=True, cwd=ROOT
    )
    with open(STAMP, "w") as f:
        f.write(want)


def lock() -> int:
    """Rewrites requirements.lock: jaxcl[test]'s newest allowed versions, installed in a fresh
    venv, frozen (every package jaxcl and its tests import, and what those pull in)."""
    with tempfile.TemporaryDirectory() as tmp:
        py = os.path.join(tmp, "bin", "python")
        subprocess.run([sys.executable, "-m", "venv", tmp], check=True)
        subprocess.run([py] + PIP + ["-e", ROOT + "[test]"], check=True, cwd=ROOT)
        frozen = subprocess.run(
            [py, "-m", "pip", "freeze", "--exclude-editable"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    head = (
        f"# The exact versions behind results/ and CI: `python3 dev.py lock` wrote this from\n"
        f"# pyproject.toml's ranges on Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}.\n"
        f"# dev.py installs with it as pip constraints; JAXCL_UNLOCKED=1 ignores it.\n"
    )
    with open(LOCK, "w") as f:
        f.write(head + frozen)
    print(f"dev.py: {len(frozen.splitlines())} pins -> {LOCK}")
    return 0


def lint() -> int:
    """`ruff check` and `ruff format --check` (settings in pyproject.toml); 0 when both pass."""
    print("dev.py: ruff check . && ruff format --check .", flush=True)
    ruff = [os.path.join(BIN, "python"), "-m", "ruff"]
    for cmd in (["check", "."], ["format", "--check", "."]):
        rc = subprocess.call(ruff + cmd, cwd=ROOT)
        if rc != 0:
            return rc
    return 0


def test(args: list[str]) -> int:
    """No args: ruff, the whole suite, then the tests marked numerics under SSE4.2 (CI).
    `--fast`: ruff, then the tests not marked slow. Other args select tests (pytest's own)."""
    fast = "--fast" in args
    args = [a for a in args if a != "--fast"]
    # Two or more workers (pytest-xdist), one test file each at a time: the suite is bound by
    # XLA compiles, which run on one thread, so two workers keep both cores of a small machine
    # busy (fresh clone, 2 cores: 738 s on one worker, 604 s on two); at most 4.
    pytest = [
        os.path.join(BIN, "python"),
        "-m",
        "pytest",
        "-n",
        "auto",
        "--maxprocesses",
        "4",
        "--dist",
        "loadfile",
    ]
    if fast or not args:
        rc = lint()
        if rc != 0:
            return rc
    if fast:
        return subprocess.call(pytest + ["-m", "not slow", "tests"] + args, cwd=ROOT)
    rc = subprocess.call(pytest + ["tests"] + args, cwd=ROOT)
    if rc != 0 or args:  # a selection of the user's: run just that
        return rc
    print(f"dev.py: the tests marked numerics again, under XLA_FLAGS={OTHER_CPU}", flush=True)
    env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " " + OTHER_CPU).strip()}
    return subprocess.call(pytest + ["-m", "numerics", "tests"], cwd=ROOT, env=env)


def main(argv: list[str]) -> int:
    tasks = {"figure1": None, "test": None, "lock": None}
    if not argv or argv[0] not in tasks:
        print(
            f"usage: python3 dev.py {{{'|'.join(tasks)}}} [extra args]  (test --fast: no slow tests)",
            file=sys.stderr,
        )
        return 2
    if argv[0] == "lock":
        return lock()
    ensure_venv()
    if argv[0] == "test":
        return test(argv[1:])
    return subprocess.call(
        [os.path.join(BIN, "jaxcl"), "run", "sweeps/figure1.toml", "--out", "runs/figure1"]
        + argv[1:],
        cwd=ROOT,
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
