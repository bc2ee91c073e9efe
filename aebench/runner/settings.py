"""Settings of one invocation that do not change results (and so are not part of a job's hash)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class RunSettings:
    results: Path = Path("results")
    data_root: str | None = None
    device: str = "auto"
    progress: bool = True
    download: bool = True
    debug: bool = False
    plugins: tuple[str, ...] = ()  # re-imported by worker processes and Slurm jobs
    # train the jobs that differ only in their seed as one stack where that is exact: on, off, or auto (on a GPU,
    # which a single small model leaves idle; off on a CPU, where a stack costs what its members cost one by one)
    stack: str = "auto"

    def suite_dir(self, suite: str) -> Path:
        return Path(self.results) / suite


def resolve_device(name: str = "auto") -> torch.device:  # noqa: F821
    """``auto`` picks cuda, then mps, then cpu; an explicit device that is absent is refused."""
    import torch

    from aebench.errors import AebenchError

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise AebenchError(f"--device {name!r}: not a device; allowed: auto, cpu, cuda, cuda:N, mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AebenchError(f"--device {name}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise AebenchError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    return dev


def prepare_device(name: str = "auto") -> torch.device:  # noqa: F821
    """The device to run on, set up for speed that changes nothing a metric can see."""
    import torch

    device = resolve_device(name)
    if device.type == "cpu":
        # Weights that weight decay drives towards zero (RAE's decoder, dead units) become subnormal
        # floats, which x86 CPUs compute 10-100x slower: RAE's epochs grew from 2.5 s to 14 s. Flushing
        # them to zero changes nothing a metric can see.
        torch.set_flush_denormal(True)
    return device
