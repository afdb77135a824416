"""A throw-away one-node SLURM cluster on localhost, for tests of the SLURM profile.

Everything the cluster needs lives in one temporary directory: a fresh MUNGE key and
socket, ``slurm.conf``, the controller's state, the node's spool and the logs. The
daemons (``munged``, ``slurmctld``, ``slurmd``) run in the foreground as children of
this process, so :meth:`SlurmCluster.stop` ends exactly them, by pid; nothing is
written outside the temporary directory and no system service is touched.

Clients find the cluster through ``SLURM_CONF`` (see :attr:`SlurmCluster.env`). The
snakemake SLURM job-step executor strips ``SLURM_*`` variables before it calls ``srun``
inside an allocation, so :attr:`SlurmCluster.env` also puts a small ``srun`` shim
first on ``PATH`` that restores ``SLURM_CONF`` (a real cluster keeps its
configuration at the default path, or serves it "configless", and needs no shim).

Needs root (``SlurmUser=root``) and the Debian packages ``slurmctld slurmd
slurm-client munge``; :func:`ensure_slurm_installed` installs them with apt-get and
raises :class:`SlurmUnavailable` (a reason to skip) when that is impossible.

Example
-------
>>> with SlurmCluster(tmp_path / "slurm") as cluster:   # doctest: +SKIP
...     cluster.client("sbatch", "--wrap", "hostname")
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

APT_PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("munge", "unmunge", "sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel")
SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be installed or run here; the message says why (a skip reason)."""


class SlurmClusterError(RuntimeError):
    """The cluster did not come up or misbehaved; the message carries the daemons' logs."""


def _which(name: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS])
    return shutil.which(name, path=path)


def missing_binaries() -> list[str]:
    """Names of the SLURM/MUNGE programs the cluster needs that are not installed."""
    return [name for name in (*DAEMONS, *CLIENTS) if _which(name) is None]


def ensure_slurm_installed(timeout: float = 900) -> None:
    """Install Debian's slurm-wlm daemons, clients and munge with apt-get if any is missing.

    Raises
    ------
    SlurmUnavailable
        Not root, or no apt-get: the caller should skip.
    SlurmClusterError
        apt-get ran and failed (the message holds its output).
    """
    missing = missing_binaries()
    if not missing:
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"SLURM programs missing ({', '.join(missing)}) and not root, "
                               f"so cannot apt-get install {' '.join(APT_PACKAGES)}")
    apt = _which("apt-get")
    if apt is None:
        raise SlurmUnavailable(f"SLURM programs missing ({', '.join(missing)}) and no apt-get "
                               f"to install {' '.join(APT_PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=300"]
    for cmd in ([apt, *lock, "update", "-qq"],
                [apt, *lock, "install", "-y", "-qq", "--no-install-recommends", *APT_PACKAGES]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise SlurmClusterError(f"`{' '.join(cmd)}` failed ({proc.returncode}):\n"
                                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    still = missing_binaries()
    if still:
        raise SlurmClusterError(f"apt-get installed {' '.join(APT_PACKAGES)} but {', '.join(still)} "
                                "are still not found")


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the test process dies, even by SIGKILL (Linux)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def detect_node() -> dict[str, int]:
    """CPUs, topology and memory (MB) of this machine as slurmd sees them (``slurmd -C``)."""
    node = {"CPUs": os.cpu_count() or 1}
    try:
        out = subprocess.run([_which("slurmd") or "slurmd", "-C"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for key in ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory"):
        m = re.search(rf"\b{key}=(\d+)", out)
        if m:
            node[key] = int(m.group(1))
    if "RealMemory" not in node:
        with open("/proc/meminfo") as f:
            kb = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
        node["RealMemory"] = kb // 1024
    return node


@dataclass
class SlurmCluster:
    """A one-node SLURM cluster rooted in ``root`` (created if missing).

    Parameters
    ----------
    root
        Private directory for keys, configuration, state, spool and logs.
    partition
        Name of the single (default) partition.
    memory_margin_mb
        Memory kept back from the node's ``RealMemory`` (slurmd drains a node that
        advertises more memory than it has).
    """

    root: Path
    partition: str = "debug"
    memory_margin_mb: int = 1024

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.hostname = socket.gethostname().split(".")[0] or "localhost"
        self.procs: dict[str, subprocess.Popen] = {}
        self.node: dict[str, int] = {}
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.bin_dir = self.root / "bin"

    # ---------------------------------------------------------------- environment
    @property
    def env(self) -> dict[str, str]:
        """Environment for clients (sbatch, squeue, snakemake): ``SLURM_CONF`` and the srun shim."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "SQUEUE_"))}
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = os.pathsep.join([str(self.bin_dir), env.get("PATH", ""), *SBIN_DIRS])
        return env

    @property
    def cpus(self) -> int:
        return self.node.get("CPUs", 1)

    @property
    def memory_mb(self) -> int:
        """Memory the node offers to jobs (its ``RealMemory`` in slurm.conf)."""
        return self.node["RealMemory"]

    # ---------------------------------------------------------------- lifecycle
    def __enter__(self) -> "SlurmCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 120) -> None:
        """Write the configuration, start munged, slurmctld and slurmd; wait for an idle node.

        On failure the daemons already started keep running; call :meth:`stop`
        (the context manager and the pytest fixture do).
        """
        if self.procs:
            raise SlurmClusterError("cluster already started")
        for d in ("munge", "state", "spool", "log", "jobs"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o755)  # munged wants its socket directory searchable
        self._write_srun_shim()
        self._start_munge(timeout)
        self._write_conf()
        deadline = time.monotonic() + timeout
        # -D: foreground (a child of this process, ended by pid); -c: start from a clean state.
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-c", "-f", str(self.conf)])
        self._wait(lambda: self.client("scontrol", "ping", check=False).stdout.count("UP") > 0,
                   deadline, "slurmctld to answer `scontrol ping`")
        self._spawn("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf), "-N", self.hostname])
        self._wait(self._node_idle, deadline, f"node {self.hostname} to be idle in `sinfo`")

    def stop(self, timeout: float = 30) -> None:
        """Cancel every job, then end slurmd, slurmctld and munged (only the ones started here)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            try:
                self.client("scancel", "--full", "--user", str(os.geteuid()), check=False, timeout=20)
                self._wait(lambda: not self.client("squeue", "-h", "-t", "RUNNING,PENDING,COMPLETING",
                                                   check=False, timeout=20).stdout.strip(),
                           time.monotonic() + 30, "jobs to end", raise_=False)
            except Exception:  # a dead daemon must not keep the others running
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None:
                continue
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()
        self._kill_orphan_stepds()

    # ---------------------------------------------------------------- clients
    def client(self, *args: str, check: bool = True, timeout: float = 60,
               input: str | None = None) -> subprocess.CompletedProcess:
        """Run a SLURM client command against this cluster; output captured as text."""
        proc = subprocess.run([_which(args[0]) or args[0], *args[1:]], env=self.env, capture_output=True,
                              text=True, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise SlurmClusterError(f"`{' '.join(args)}` failed ({proc.returncode}): "
                                    f"{proc.stdout}{proc.stderr}\n{self.logs()}")
        return proc

    def smoke_test(self, timeout: float = 60) -> str:
        """Run ``sbatch --wrap "hostname && srun hostname"`` to completion; return the job id.

        The inner srun runs without ``SLURM_CONF``, as the snakemake job-step executor calls it.
        """
        out = self.root / "jobs" / "smoke.%j.out"
        proc = self.client("sbatch", "--parsable", "-p", self.partition, "-t", "1", "--mem", "100",
                           "-o", str(out), "--wrap", "hostname && env -u SLURM_CONF srun -n1 hostname",
                           timeout=timeout)
        job_id = proc.stdout.strip().split(";")[0]
        self._wait(lambda: self.jobs().get(job_id, {}).get("state") in
                   ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"),
                   time.monotonic() + timeout, f"smoke job {job_id} to end")
        state = self.jobs()[job_id]["state"]
        out = Path(str(out).replace("%j", job_id))
        text = out.read_text() if out.exists() else ""
        if state != "COMPLETED" or text.count(self.hostname) < 2:
            raise SlurmClusterError(f"smoke job {job_id} {state}, printed {text!r}; expected {self.hostname!r} "
                                    "twice\n"
                                    f"{self.logs()}")
        return job_id

    def jobs(self) -> dict[str, dict[str, str]]:
        """Every job the controller still remembers (MinJobAge), by id: name, state, partition, command."""
        fmt = "%i|%j|%T|%P|%o"
        out = self.client("squeue", "-h", "--states=all", "-o", fmt).stdout
        jobs = {}
        for line in out.splitlines():
            parts = line.split("|", 4)
            if len(parts) == 5:
                jobs[parts[0]] = dict(zip(("name", "state", "partition", "command"), parts[1:]))
        return jobs

    def logs(self, tail: int = 3000) -> str:
        """The tails of the daemons' log files, for error messages."""
        parts = []
        for path in sorted((self.root / "log").glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    # ---------------------------------------------------------------- internals
    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.stdout.log", "w")
        self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        log.close()

    def _wait(self, ready, deadline: float, what: str, raise_: bool = True) -> bool:
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise SlurmClusterError(f"{name} exited ({proc.returncode}) while waiting for {what}\n"
                                            f"{self.logs()}")
            try:
                if ready():
                    return True
            except (OSError, subprocess.SubprocessError):
                pass
            time.sleep(0.5)
        if raise_:
            raise SlurmClusterError(f"timed out waiting for {what}\n{self.logs()}")
        return False

    def _start_munge(self, timeout: float) -> None:
        d = self.root / "munge"
        key = d / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        self._spawn("munged", [
            _which("munged"), "--foreground", "--force",
            f"--socket={self.munge_socket}", f"--key-file={key}",
            f"--pid-file={d / 'munged.pid'}", f"--log-file={self.root / 'log' / 'munged.log'}",
            f"--seed-file={d / 'munged.seed'}",
        ])

        def munge_ok() -> bool:
            cred = subprocess.run([_which("munge"), "-n", "-S", str(self.munge_socket)],
                                  capture_output=True, text=True, timeout=10)
            if cred.returncode != 0:
                return False
            back = subprocess.run([_which("unmunge"), "-S", str(self.munge_socket)], input=cred.stdout,
                                  capture_output=True, text=True, timeout=10)
            return back.returncode == 0

        self._wait(munge_ok, time.monotonic() + timeout, "munged to encode and decode a credential")

    def _write_conf(self) -> None:
        self.node = detect_node()
        self.node["RealMemory"] = max(256, self.node["RealMemory"] - self.memory_margin_mb)
        ctld_port, slurmd_port = _free_ports(2)
        topology = " ".join(f"{k}={self.node[k]}" for k in
                            ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore",
                             "RealMemory") if k in self.node)
        log = self.root / "log"
        self.conf.write_text(f"""\
# One-node test cluster written by tests/cluster/slurm_cluster.py
ClusterName=speechdissect-test
SlurmctldHost={self.hostname}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={self.root / 'state'}
SlurmdSpoolDir={self.root / 'spool'}
SlurmctldPidFile={self.root / 'slurmctld.pid'}
SlurmdPidFile={self.root / 'slurmd.pid'}
SlurmctldLogFile={log / 'slurmctld.log'}
SlurmdLogFile={log / 'slurmd.log'}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
DefMemPerCPU=1024
ReturnToService=2
# Finished jobs stay visible to squeue for 2 hours (the whole test run): the snakemake plugin's
# squeue status queries need MinJobAge >= 3 x its status-check interval.
MinJobAge=7200
InactiveLimit=0
KillWait=5
Waittime=0
NodeName={self.hostname} NodeAddr=127.0.0.1 {topology} State=UNKNOWN
PartitionName={self.partition} Nodes={self.hostname} Default=YES MaxTime=INFINITE State=UP
""")

    def _write_srun_shim(self) -> None:
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        shim = self.bin_dir / "srun"
        shim.write_text("#!/bin/sh\n"
                        "# Restores the test cluster's configuration for srun calls whose environment\n"
                        "# was stripped of SLURM_* variables (snakemake's slurm-jobstep executor does that).\n"
                        f"SLURM_CONF='{self.conf}' exec '{_which('srun') or '/usr/bin/srun'}' \"$@\"\n")
        shim.chmod(0o755)

    def _node_idle(self) -> bool:
        out = self.client("sinfo", "-h", "-N", "-o", "%N %t", check=False).stdout.split()
        return len(out) >= 2 and out[0] == self.hostname and out[1] == "idle"

    def _kill_orphan_stepds(self) -> None:
        """End slurmstepd processes of this cluster that outlived slurmd (found by their SLURM_CONF)."""
        marker = f"SLURM_CONF={self.conf}".encode()
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit():
                continue
            try:
                if (pid_dir / "comm").read_text().strip() != "slurmstepd":
                    continue
                if marker not in (pid_dir / "environ").read_bytes().split(b"\0"):
                    continue
                os.kill(int(pid_dir.name), signal.SIGKILL)
            except (OSError, ValueError):
                continue
