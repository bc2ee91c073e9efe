"""KID (Binkowski et al. 2018) exactly as torch-fidelity defines it, computed in torch on the job's device.

torch-fidelity's ``kid_features_to_metric`` draws ``subsets`` pairs of index subsets from
``numpy.random.RandomState(seed)`` (generated set first, then real set), and averages the unbiased MMD^2 under
the cubic polynomial kernel ``k(x, y) = (x.y / d + 1)^3`` over them, in numpy float32. This module draws the
same subsets and computes the same kernel products (float32 matrix products, as torch-fidelity's), but sums
the kernel values in float64 and runs on the job's device with torch's threads. The real set's own term of
each subset depends only on the real features and the subset's indices, which depend on the generated set's
size and not its content: ``KIDReference`` computes it once and reuses it for every generated set of that size
(every sampler, the reconstructions, each FID_inf sample size), a third of the work. Tests check the values
against ``torch_fidelity.calculate_metrics`` on the same images.
"""

from __future__ import annotations

import numpy as np
import torch

from aebench.errors import AebenchError

KID_SEED = 2020  # torch-fidelity's default rng_seed: the same subsets as a default direct call


def _kernel_sum(a: torch.Tensor, b: torch.Tensor, off_diagonal: bool) -> float:
    """Sum of the cubic polynomial kernel over all pairs of rows of a and b (less the diagonal: a is b)."""
    k = (a @ b.T).mul_(1.0 / a.shape[1]).add_(1.0).pow_(3)
    total = k.sum(dtype=torch.float64)
    if off_diagonal:
        total = total - k.diagonal().sum(dtype=torch.float64)
    return float(total)


def subset_indices(n_gen: int, n_real: int, subsets: int, size: int,
                   seed: int = KID_SEED) -> list[tuple[np.ndarray, np.ndarray]]:
    """torch-fidelity's subsets: per subset, ``size`` generated then ``size`` real indices without replacement."""
    rng = np.random.RandomState(seed)
    return [(rng.choice(n_gen, size, replace=False), rng.choice(n_real, size, replace=False))
            for _ in range(subsets)]


class KIDReference:
    """One real feature set, with its per-subset kernel terms cached by (generated size, subset size, subsets)."""

    def __init__(self, real: torch.Tensor, seed: int = KID_SEED):
        self.real, self.seed = real, seed
        self._real_terms: dict[tuple[int, int, int], list[float]] = {}

    def __call__(self, gen: torch.Tensor, subsets: int = 100, size: int = 1000) -> tuple[float, float]:
        """(mean, std) of the unbiased MMD^2 over ``subsets`` subsets of ``size`` features of each set."""
        if gen.dim() != 2 or gen.shape[1] != self.real.shape[1]:
            raise AebenchError(f"KID needs (N, {self.real.shape[1]}) features, got {tuple(gen.shape)}")
        if size < 2 or len(gen) < size or len(self.real) < size:
            raise AebenchError(f"KID subset size {size} needs at least that many features on each side "
                               f"(generated: {len(gen)}, real: {len(self.real)}) and at least 2")
        draws = subset_indices(len(gen), len(self.real), subsets, size, self.seed)
        key = (len(gen), size, subsets)
        real = self.real.to(gen.device)
        terms = self._real_terms.setdefault(key, [])  # filled on the first generated set of this size
        mmds = []
        m = size
        for n, (i, j) in enumerate(draws):
            x = gen[torch.from_numpy(i).to(gen.device)]
            y = real[torch.from_numpy(j).to(real.device)]
            if n == len(terms):
                terms.append(_kernel_sum(y, y, True))
            xx = _kernel_sum(x, x, True)
            xy = _kernel_sum(x, y, False)
            mmds.append((xx + terms[n]) / (m * (m - 1)) - 2 * xy / (m * m))
        values = np.asarray(mmds, dtype=np.float64)
        return float(values.mean()), float(values.std())
