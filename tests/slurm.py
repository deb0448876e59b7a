"""A real one-node Slurm for the tests (munged, slurmctld, slurmd from the distribution's
packages, installed with apt-get when missing), private to one test session: its own config,
ports, state, munge key and socket under a temporary directory, stopped at the end."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd")


def unavailable() -> str:
    """Why a Slurm cannot be started here ('' if it can): installs what is missing."""
    if os.name != "posix" or os.geteuid() != 0:
        return "starting a Slurm needs root (slurmd runs jobs as their users)"
    if all(shutil.which(d) or os.path.exists(f"/usr/sbin/{d}") for d in DAEMONS):
        return ""
    if not shutil.which("apt-get"):
        return "slurm-wlm/munge are not installed and there is no apt-get to install them"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            return f"{' '.join(cmd)} failed: {proc.stderr.strip()[-300:]}"
    return ""


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Slurm:
    """munged + slurmctld + slurmd on this host; `env` is what sbatch/squeue/srun need."""

    def __init__(self, root: str, cpus: int = 2):
        self.root = root
        self.host = socket.gethostname().split(".")[0]
        self.procs: list[subprocess.Popen] = []
        d = lambda *p: os.path.join(root, *p)  # noqa: E731
        for sub in ("state", "spool", "munge"):
            os.makedirs(d(sub), mode=0o755, exist_ok=True)
        self.sock = d("munge", "munge.socket")
        key = d("munge", "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o400)
        ctl, slurmd = _free_ports(2)
        mem = max(256, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (4 << 20))
        self.conf = d("slurm.conf")
        with open(self.conf, "w") as f:
            f.write(f"""ClusterName=jaxcltest
SlurmctldHost={self.host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctl}
SlurmdPort={slurmd}
AuthType=auth/munge
AuthInfo=socket={self.sock}
CredType=cred/munge
StateSaveLocation={d("state")}
SlurmdSpoolDir={d("spool")}
SlurmctldPidFile={d("slurmctld.pid")}
SlurmdPidFile={d("slurmd.pid")}
SlurmctldLogFile={d("slurmctld.log")}
SlurmdLogFile={d("slurmd.log")}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
MinJobAge=600
KillWait=30
SchedulerParameters=sched_interval=1
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN
PartitionName=test Nodes={self.host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
""")
        self.env = {**os.environ, "SLURM_CONF": self.conf}
        self.key = key

    def start(self, deadline_s: float = 60) -> None:
        """Starts the three daemons (foreground children) and waits until the node is idle."""
        d = lambda *p: os.path.join(self.root, *p)  # noqa: E731
        munged = shutil.which("munged") or "/usr/sbin/munged"
        self._spawn(
            [
                munged,
                "-F",
                "--force",
                f"--key-file={self.key}",
                f"--socket={self.sock}",
                f"--pid-file={d('munge', 'munged.pid')}",
                f"--seed-file={d('munge', 'seed')}",
                f"--log-file={d('munge', 'munged.log')}",
            ]
        )
        self._wait(lambda: os.path.exists(self.sock), deadline_s, "munged")
        self._spawn(
            [shutil.which("slurmctld") or "/usr/sbin/slurmctld", "-D", "-c", "-f", self.conf]
        )
        self._wait(
            lambda: self.run(["scontrol", "ping"], check=False).returncode == 0,
            deadline_s,
            "slurmctld",
        )
        self._spawn(
            [shutil.which("slurmd") or "/usr/sbin/slurmd", "-D", "-f", self.conf, "-N", self.host]
        )
        self._wait(
            lambda: (
                self.run(["sinfo", "-h", "-o", "%T"], check=False).stdout.strip().rstrip("*")
                in ("idle", "mixed", "allocated")
            ),
            deadline_s,
            "slurmd",
        )

    def _spawn(self, cmd: list[str]) -> None:
        log = open(os.path.join(self.root, os.path.basename(cmd[0]) + ".out"), "w")
        self.procs.append(
            subprocess.Popen(
                cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )

    def _wait(self, ready, deadline_s: float, what: str) -> None:
        deadline = time.monotonic() + deadline_s
        while not ready():
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(
                        f"{what}: {p.args[0]} exited ({p.returncode}); see {self.root}"
                    )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not ready after {deadline_s} s; see {self.root}")
            time.sleep(0.2)

    def run(self, cmd: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("timeout", 60)
        proc = subprocess.run(
            cmd, env={**self.env, **kw.pop("env", {})}, capture_output=True, text=True, **kw
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr}")
        return proc

    def job(self, job_id: str) -> dict:
        """`scontrol show job`'s fields of one job or array task (KEY=VALUE pairs)."""
        out = self.run(["scontrol", "-o", "show", "job", job_id]).stdout
        fields = {}
        for line in out.splitlines()[:1]:
            for part in line.split():
                if "=" in part:
                    k, v = part.split("=", 1)
                    fields[k] = v
        return fields

    def stop(self) -> None:
        """Cancels every job, then stops the daemons (slurmd, slurmctld, munged)."""
        try:
            self.run(["scancel", "--full", "--user=root"], check=False)
        except Exception:
            pass
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
