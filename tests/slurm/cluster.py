"""Start and stop the one-node test cluster of ``start.sh``/``stop.sh`` from Python (the tests' fixture)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
START, STOP = HERE / "start.sh", HERE / "stop.sh"


def unavailable() -> str | None:
    """Why no test cluster can be started here, or None."""
    missing = [exe for exe in ("slurmctld", "slurmd", "munged", "mungekey", "sbatch", "squeue")
               if shutil.which(exe) is None and not Path("/usr/sbin", exe).exists()]
    if missing:
        return f"Slurm is not installed ({', '.join(missing)} missing): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "starting the test Slurm cluster needs root (slurmd runs jobs as their user)"
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "submitit is not installed: pip install 'aebench[slurm]'"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(folder: Path) -> Path:
    """Start the cluster with its files in ``folder``; returns its slurm.conf. Raises with the logs on failure."""
    env = {**os.environ, "SLURMCTLD_PORT": str(_free_port()), "SLURMD_PORT": str(_free_port()),
           "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"}
    proc = subprocess.run([str(START), str(folder)], env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        stop(folder)
        raise RuntimeError(f"tests/slurm/start.sh failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return folder / "slurm.conf"


def stop(folder: Path) -> None:
    subprocess.run([str(STOP), str(folder)], capture_output=True, text=True, timeout=120,
                   env={**os.environ, "SLURM_CONF": str(folder / "slurm.conf")})
