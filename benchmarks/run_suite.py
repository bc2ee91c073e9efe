"""Whole-suite figures: wall time and peak memory of ``aebench run SUITE`` in a fresh results folder.

    python benchmarks/run_suite.py suites/mnist.yaml [--device cpu] [-- extra aebench args]

Writes benchmarks/results/suite-<name>-<device>.json. Peak memory is the child process's max RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("suite")
    p.add_argument("--device", default="auto")
    p.add_argument("--results", default=None, help="results folder (default: a fresh temporary one)")
    p.add_argument("extra", nargs="*", help="more aebench run arguments (after --)")
    args = p.parse_args(argv)
    results = args.results or tempfile.mkdtemp(prefix="aebench-bench-")
    cmd = [sys.executable, "-m", "aebench.cli", "run", args.suite, "--results", results, "--device", args.device,
           "--no-progress", *args.extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd)
    wall = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and args.device != "cpu" else (
        f"cpu ({platform.machine()}, {os.cpu_count()} cores)")
    out = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": device,
        "command": " ".join(["aebench", *cmd[3:]]), "exit_code": proc.returncode,
        "wall_seconds": round(wall, 1), "peak_rss_gib": round(peak_kib / 2**20, 3), "results": results,
    }
    HERE.joinpath("results").mkdir(exist_ok=True)
    tag = "gpu" if "cpu" not in device else "cpu"
    path = HERE / "results" / f"suite-{Path(args.suite).stem}-{tag}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
