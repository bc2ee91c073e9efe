"""Benchmarks share real MNIST in memory and write their figures as JSON beside this file.

Run: ``pytest benchmarks --benchmark-only --benchmark-json=benchmarks/results/pytest-benchmark.json``
"""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DATA = Path(os.environ.get("AEBENCH_DATA") or HERE.parent.parent / "shared" / "data")
_figures: dict[str, dict] = {}


def device_label() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    return f"cpu ({cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def record(name: str, **figures) -> None:
    """Keep a figure for benchmarks/results/<session>.json."""
    _figures[name] = figures


@pytest.fixture(scope="session")
def mnist():
    from aebench.data import load

    if not (DATA / "MNIST" / "raw").exists():
        pytest.skip(f"real MNIST not found under {DATA}; set AEBENCH_DATA")
    return load("mnist", "train", DATA), load("mnist", "test", DATA)


def pytest_sessionfinish(session, exitstatus):
    if not _figures:
        return
    RESULTS.mkdir(exist_ok=True)
    name = os.environ.get("AEBENCH_BENCH_NAME", "figures")
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": device_label(),
           "command": "pytest benchmarks --benchmark-only", "figures": _figures}
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
