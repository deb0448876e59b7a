#!/usr/bin/env python3
"""Two commands on a fresh machine with only Python: `python3 dev.py figure1` and
`python3 dev.py test`. Each makes ./.venv and installs jaxcl[test] into it when needed."""

import hashlib
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(ROOT, ".venv")
BIN = os.path.join(VENV, "Scripts" if os.name == "nt" else "bin")
STAMP = os.path.join(VENV, ".jaxcl-installed")


def ensure_venv() -> None:
    """(Re)installs when the venv is missing or pyproject.toml changed since the last install."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        want = hashlib.sha256(f.read()).hexdigest()
    if os.path.exists(STAMP) and open(STAMP).read() == want:
        return
    if not os.path.exists(os.path.join(BIN, "python")):
        print(f"dev.py: creating {VENV}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    print("dev.py: installing jaxcl[test] (first time only)", flush=True)
    pip = [os.path.join(BIN, "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["-e", ROOT + "[test]"], check=True, cwd=ROOT)
    with open(STAMP, "w") as f:
        f.write(want)


def main(argv: list[str]) -> int:
    tasks = {
        "figure1": [os.path.join(BIN, "jaxcl"), "run", "sweeps/figure1.toml",
                    "--out", "runs/figure1"],
        # Two or more workers (pytest-xdist), one test file each at a time: the suite is bound by
        # XLA compiles, which run on one thread, so two workers keep both cores of a small
        # machine busy (fresh clone, 2 cores: 738 s on one worker, 604 s on two); at most 4, each holding its own jax.
        "test": [os.path.join(BIN, "python"), "-m", "pytest", "-n", "auto", "--maxprocesses",
                 "4", "--dist", "loadfile", "tests"],
    }
    if not argv or argv[0] not in tasks:
        print(f"usage: python3 dev.py {{{'|'.join(tasks)}}} [extra args]", file=sys.stderr)
        return 2
    ensure_venv()
    return subprocess.call(tasks[argv[0]] + argv[1:], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
