"""The second stage of Dai & Wipf's two-stage VAE (2019), as a latent sampler: a small VAE fitted to the training
codes, whose prior draws, decoded, are the codes handed to the autoencoder's decoder."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from aebench.errors import AebenchError
from aebench.models.samplers import Sampler


class SecondStageVAE(nn.Module):
    """VAE on codes u (D-dim) with a D-dim latent: 3-layer ReLU MLPs (the paper's depth) and a learned
    Gaussian variance gamma for the reconstruction (as in the paper's second stage)."""

    def __init__(self, dim: int, hidden: int, depth: int = 3):
        super().__init__()

        def mlp(inp: int, out: int) -> nn.Sequential:
            layers: list[nn.Module] = []
            prev = inp
            for _ in range(depth):
                layers += [nn.Linear(prev, hidden), nn.ReLU()]
                prev = hidden
            return nn.Sequential(*layers, nn.Linear(prev, out))

        self.dim = dim
        self.encoder, self.decoder = mlp(dim, 2 * dim), mlp(dim, dim)
        self.log_gamma = nn.Parameter(torch.zeros(()))

    def loss(self, u: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The negative ELBO per code, averaged: ||u - dec(v)||^2 / (2 gamma) + (D/2) log(2 pi gamma) + KL."""
        mean, logvar = self.encoder(u).chunk(2, dim=1)
        v = mean + torch.exp(0.5 * logvar) * eps
        sq = (self.decoder(v) - u).pow(2).sum(1)
        nll = sq / (2 * self.log_gamma.exp()) + 0.5 * self.dim * (math.log(2 * math.pi) + self.log_gamma)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        return (nll + kl).mean()


class TwoStageSampler(Sampler):
    """Second-stage VAE fitted to the training codes; samples are its decoder's outputs at N(0, I) draws.

    It applies to every model: it needs only the codes, like the ``gaussian`` and ``gmm`` samplers, so it is
    one more ex-post density that compares all autoencoders as generators. Paired with the ``two-stage-vae``
    model (a first stage with a learned decoder variance) it is Dai & Wipf's full method. Differences from the
    paper: it fits the posterior means the runner hands to every sampler (not draws from q(z|x)), standardised
    per dimension (undone when sampling), and trains on the CPU with Adam at a fixed learning rate.
    Deterministic: initialisation, batch order and noise come from ``seed``; sampling uses the caller's generator.

    ``noise`` (default): a sample is mean(v) + sqrt(gamma) eps, a draw from the fitted second-stage model, whose
    code distribution is what its ELBO fits; without it, the decoder means alone (Dai & Wipf's images), which
    lack gamma of variance per dimension when gamma has not gone to 0 (a Gaussian cloud leaves it undetermined).
    """

    def __init__(self, hidden: int = 256, epochs: int = 50, lr: float = 1e-3, batch_size: int = 256, seed: int = 0,
                 noise: bool = True):
        for name, value in (("hidden", hidden), ("epochs", epochs), ("batch_size", batch_size)):
            if value < 1:
                raise AebenchError(f"{name} must be >= 1, got {value}")
        if not lr > 0:
            raise AebenchError(f"lr must be > 0, got {lr}")
        self.hidden, self.epochs, self.lr, self.batch_size, self.seed = hidden, epochs, lr, batch_size, seed
        self.noise = noise

    def fit(self, codes: torch.Tensor, model: Any = None) -> TwoStageSampler:
        c = codes.detach().double().cpu()
        if c.dim() != 2 or c.shape[0] < 2:
            raise AebenchError(f"the two-stage sampler needs at least 2 codes of shape (N, D), got {tuple(c.shape)}")
        self.shift = c.mean(0)
        self.scale = c.std(0).clamp_min(1e-6 * max(float(c.std(0).max()), 1e-12))
        u = ((c - self.shift) / self.scale).float()
        d = u.shape[1]
        g = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = SecondStageVAE(d, self.hidden)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        net.train()
        with torch.enable_grad():  # fit may be called lazily from inside a no_grad evaluation
            self._train(net, opt, u, g)
        self.net = net.eval()
        return self

    def _train(self, net: SecondStageVAE, opt: torch.optim.Optimizer, u: torch.Tensor, g: torch.Generator) -> None:
        n = u.shape[0]
        for _ in range(self.epochs):
            perm = torch.randperm(n, generator=g)
            for i in range(0, n, self.batch_size):
                batch = u[perm[i : i + self.batch_size]]
                loss = net.loss(batch, torch.randn(batch.shape, generator=g))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        v = torch.randn(n, self.net.dim, generator=generator)
        u = self.net.decoder(v).double()
        if self.noise:
            u = u + self.net.log_gamma.double().exp().sqrt() * torch.randn(u.shape, generator=generator,
                                                                           dtype=torch.float64)
        return (self.shift + u * self.scale).float()
