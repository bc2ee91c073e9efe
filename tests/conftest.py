"""Shared fixtures: real MNIST from ../shared/data (skipped when absent), tiny suites, isolated registries."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AEBENCH_DATA") or (REPO.parent / "shared" / "data"))

os.environ.setdefault("OMP_NUM_THREADS", "2")


def _has_mnist(root: Path) -> bool:
    return (root / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The data root holding real MNIST; tests that need it skip with the reason when it is absent."""
    if not _has_mnist(SHARED_DATA):
        pytest.skip(f"real MNIST not found under {SHARED_DATA} (set AEBENCH_DATA or provide ../shared/data)")
    return SHARED_DATA


@pytest.fixture
def write_suite(tmp_path: Path):
    """Write a suite YAML file from text (dedented) and return its path."""

    def write(text: str, name: str = "suite.yaml") -> Path:
        p = tmp_path / name
        p.write_text(textwrap.dedent(text))
        return p

    return write


TINY_SUITE = """\
version: 1
name: tiny
datasets: [synthetic]
latent_dim: 4
backbone: {name: mlp, hidden: [32]}
models: [ae, vae]
seeds: [0]
train: {epochs: 2, batch_size: 64}
eval: {n_samples: 100, samplers: [prior, gaussian]}
metrics: [recon]
"""


def suite_text(**fields: str) -> str:
    """TINY_SUITE with top-level fields replaced or added, values as YAML text:
    ``suite_text(name="lb", seeds="[0, 1]")``. Tests vary the one small suite instead of copying it."""
    lines = dict(line.split(": ", 1) for line in TINY_SUITE.splitlines())
    lines.update(fields)
    return "".join(f"{k}: {v}\n" for k, v in lines.items())


@pytest.fixture
def tiny_suite(write_suite) -> Path:
    """A suite that trains two models on the synthetic set in about a second."""
    return write_suite(TINY_SUITE)


@pytest.fixture
def one_thread():
    """One torch thread for tests of tiny tensors: faster, and much faster on a busy machine
    (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def clean_registry():
    """Undo registrations a test makes (plugins register into the global registries)."""
    from aebench import plugins
    from aebench.registry import REGISTRIES

    before = {k: set(r.names()) for k, r in REGISTRIES.items()}
    loaded = dict(plugins._loaded)
    yield
    plugins._loaded.clear()
    plugins._loaded.update(loaded)
    for k, r in REGISTRIES.items():
        for name in set(r.names()) - before[k]:
            r.unregister(name)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> Path:
    """A one-node Slurm cluster on 127.0.0.1 (tests/slurm/start.sh), stopped after the session; yields its folder.

    Skipped where Slurm cannot run; with AEBENCH_REQUIRE_SLURM=1 (CI) that is a failure instead.
    """
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "slurm"))
    import cluster

    reason = cluster.unavailable()
    if reason:
        if os.environ.get("AEBENCH_REQUIRE_SLURM") == "1":
            pytest.fail(f"AEBENCH_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    folder = Path("/tmp") / f"aebench-slurm-{os.getpid()}"  # short: munge's socket path must fit in 108 bytes
    conf = cluster.start(folder)
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    try:
        yield folder
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        cluster.stop(folder)
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
