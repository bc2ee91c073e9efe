"""Samplers built on flows: the VampPrior of a ``vamp`` model, and ex-post MAF / IAF densities fitted to the
training codes by maximum likelihood (pythae's MAFSampler / IAFSampler, with their 2 x 3 x 128 MADE flows).

The ex-post flows train on the model's device for a fixed number of epochs from a fixed seed (global RNG state
is left as it was), on standardised codes (at most ``max_fit`` of them, a fixed subset); sampling runs on the
CPU and draws its base noise from the caller's generator only. Cost: a MAF evaluates its density in one MADE
pass per block, an IAF in D passes (D = latent size), so fitting an IAF is about D times slower.
"""

from __future__ import annotations

from typing import Any

import torch

from aebench.errors import AebenchError
from aebench.models.flows import AutoregressiveFlow
from aebench.models.samplers import Sampler
from aebench.models.vae import log_normal


class VampPriorSampler(Sampler):
    """The VampPrior of a ``vamp`` model: a pseudo-input u_k drawn uniformly, then z ~ q(z | u_k)."""

    def applies_to(self, model: Any) -> str | None:
        from aebench.models.vamp import VampVAE

        if isinstance(model, VampVAE):
            return None
        return f"the vamp-prior sampler draws from a VampPrior; {type(model).__name__} has none (only vamp models)"

    def fit(self, codes: torch.Tensor, model: Any = None) -> VampPriorSampler:
        reason = "no model given" if model is None else self.applies_to(model)
        if reason:
            raise AebenchError(f"vamp-prior cannot fit: {reason}")
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                comp = model.prior_components()
        finally:
            model.train(was_training)
        self.mean = comp.mean.detach().double().cpu()
        self.std = comp.logvar.detach().double().cpu().mul(0.5).exp()
        return self

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        k = torch.randint(self.mean.shape[0], (n,), generator=generator)
        eps = torch.randn(n, self.mean.shape[1], generator=generator, dtype=torch.float64)
        return (self.mean[k] + self.std[k] * eps).float()


def _device_of(model: Any) -> torch.device:
    """Where the model lives (the flow trains there: an IAF's fit costs D sequential MADE passes per step)."""
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


class _FlowSampler(Sampler):
    """Maximum likelihood of an autoregressive flow on the (standardised) training codes, Adam, fixed epochs.

    Trains on the model's device (the same device gives the same flow), samples on the CPU.
    """

    def __init__(self, n_made_blocks: int = 2, n_hidden_in_made: int = 3, hidden_size: int = 128,
                 epochs: int = 50, batch_size: int = 128, lr: float = 1e-3, seed: int = 0, max_fit: int = 10_000):
        for name, value in (("n_made_blocks", n_made_blocks), ("hidden_size", hidden_size), ("epochs", epochs),
                            ("batch_size", batch_size), ("max_fit", max_fit)):
            if value < 1:
                raise AebenchError(f"{name} must be >= 1, got {value}")
        if n_hidden_in_made < 0:
            raise AebenchError(f"n_hidden_in_made must be >= 0, got {n_hidden_in_made}")
        if not lr > 0:
            raise AebenchError(f"lr must be > 0, got {lr}")
        self.n_made_blocks, self.n_hidden_in_made, self.hidden_size = n_made_blocks, n_hidden_in_made, hidden_size
        self.epochs, self.batch_size, self.lr, self.seed, self.max_fit = epochs, batch_size, lr, seed, max_fit

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log density of standardised codes x (B, D) under the flow."""
        raise NotImplementedError

    def _draw(self, noise: torch.Tensor) -> torch.Tensor:
        """Standardised codes from base noise."""
        raise NotImplementedError

    def fit(self, codes: torch.Tensor, model: Any = None) -> _FlowSampler:
        c = codes.detach().float().cpu()
        gen = torch.Generator().manual_seed(self.seed)
        if len(c) > self.max_fit:  # a fixed subset, like the gmm sampler's
            c = c[torch.randperm(len(c), generator=gen)[: self.max_fit]]
        self.center = c.mean(0)
        self.scale = c.std(0).clamp_min(1e-6) if len(c) > 1 else torch.ones(c.shape[1])
        device = _device_of(model)
        x = ((c - self.center) / self.scale).to(device)
        cuda = [] if device.type != "cuda" else [torch.cuda.current_device() if device.index is None else device.index]
        # manual_seed seeds CUDA as well, so fork that too; callers (the evaluation context) may hold no_grad
        with torch.random.fork_rng(devices=cuda), torch.enable_grad():
            torch.manual_seed(self.seed)
            self.flow = AutoregressiveFlow(c.shape[1], self.n_made_blocks, self.n_hidden_in_made, self.hidden_size)
            self.flow.to(device)
            opt = torch.optim.Adam(self.flow.parameters(), lr=self.lr)
            self.flow.train()
            for _ in range(self.epochs):
                total = x.new_zeros(())
                for idx in torch.randperm(len(x), generator=gen).split(self.batch_size):
                    loss = -self.log_prob(x[idx.to(device)]).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total = total + loss.detach()
                if not torch.isfinite(total):  # checked once an epoch: no host sync per step on a GPU
                    raise AebenchError(f"{type(self).__name__} diverged while fitting the codes; try a lower lr")
        self.flow.cpu().eval()
        return self

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(n, self.center.shape[0], generator=generator)
        return (self._draw(noise) * self.scale + self.center).float()


class MAFSampler(_FlowSampler):
    """A masked autoregressive flow (Papamakarios et al. 2017): density in one pass, sampling in D passes."""

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        u, log_det = self.flow(x)  # codes -> noise
        return log_normal(u) + log_det

    def _draw(self, noise: torch.Tensor) -> torch.Tensor:
        return self.flow.inverse(noise)[0]


class IAFSampler(_FlowSampler):
    """An inverse autoregressive flow (Kingma et al. 2016): sampling in one pass, density (fitting) in D passes."""

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        u, log_det = self.flow.inverse(x)  # codes -> noise
        return log_normal(u) + log_det

    def _draw(self, noise: torch.Tensor) -> torch.Tensor:
        return self.flow(noise)[0]
