"""The restricted Boltzmann machine (Smolensky 1986; Hinton 2002) trained by persistent contrastive divergence
(Tieleman 2008), its log-likelihood by annealed importance sampling (Salakhutdinov & Murray 2008), and the
``gibbs`` sampler that generates from it.

Binary visible units v (the pixels) and binary hidden units h (``latent_dim`` of them):
E(v, h) = -b.v - c.h - h^T W v, and the free energy
F(v) = -log sum_h exp(-E(v, h)) = -b.v - sum_j softplus(c_j + W_j.v).
In the autoencoder interface the code is p(h = 1 | v) = sigmoid(W v + c) and the decoder is p(v | h), whose
logits W^T h + b the suite's Bernoulli likelihood scores. The RBM brings its own W, b, c: no backbone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aebench.errors import AebenchError
from aebench.models.base import Autoencoder, Encoding, ModelConfig
from aebench.models.samplers import Sampler


@dataclass
class RBMConfig(ModelConfig):
    n_chains: int = 100  # persistent fantasy particles (Tieleman 2008)
    gibbs_steps: int = 1  # block-Gibbs steps per update (PCD-k)
    init_std: float = 0.01  # W ~ N(0, init_std^2), b = c = 0 (Hinton's practical guide)
    n_betas: int = 14_500  # AIS intermediate distributions (Salakhutdinov & Murray 2008)
    n_runs: int = 100  # AIS runs

    def __post_init__(self) -> None:
        for name in ("n_chains", "gibbs_steps", "n_runs"):
            if getattr(self, name) < 1:
                raise AebenchError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_betas < 3:
            raise AebenchError(f"n_betas must be >= 3, got {self.n_betas}")
        if self.init_std < 0:
            raise AebenchError(f"init_std must be >= 0, got {self.init_std}")


class VisibleLayer(nn.Module):
    """The visible biases b; maps hidden states to visible logits W^T h + b with the encoder's (tied) W."""

    def __init__(self, image_shape: Sequence[int]):
        super().__init__()
        self.shape = tuple(image_shape)
        self.bias = nn.Parameter(torch.zeros(math.prod(self.shape)))

    def forward(self, h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.linear(h, weight.t(), self.bias).view(h.shape[0], *self.shape)


def free_energy(v: torch.Tensor, weight: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """F(v) = -b.v - sum_j softplus(c_j + W_j.v) per row of v (N, D): -log p(v) up to log Z."""
    return -(v @ b) - F.softplus(F.linear(v, weight, c)).sum(1)


def gibbs_step(v: torch.Tensor, weight: torch.Tensor, b: torch.Tensor, c: torch.Tensor,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One block-Gibbs step v -> h ~ p(h | v) -> v' ~ p(v | h); returns (v', h)."""
    h = torch.bernoulli(torch.sigmoid(F.linear(v, weight, c)), generator=generator)
    v = torch.bernoulli(torch.sigmoid(F.linear(h, weight.t(), b)), generator=generator)
    return v, h


def ais_betas(n: int) -> torch.Tensor:
    """n + 1 inverse temperatures 0 = beta_0 < ... < beta_n = 1, spaced as Salakhutdinov & Murray's 14,500:
    500 uniform on [0, 0.5), 4,000 on [0.5, 0.9), 10,000 on [0.9, 1] (scaled to n)."""
    n1 = max(1, round(n * 500 / 14_500))
    n2 = max(1, round(n * 4_000 / 14_500))
    n3 = max(1, n - n1 - n2)
    return torch.cat([torch.linspace(0, 0.5, n1 + 1)[:-1], torch.linspace(0.5, 0.9, n2 + 1)[:-1],
                      torch.linspace(0.9, 1.0, n3 + 1)]).double()


@torch.no_grad()
def ais_log_partition(weight: torch.Tensor, b: torch.Tensor, c: torch.Tensor, base_bias: torch.Tensor,
                      n_betas: int, n_runs: int, generator: torch.Generator | None = None) -> float:
    """log Z of the RBM by annealed importance sampling from the base-rate model p_A(v) ∝ exp(b_A.v).

    Intermediate marginals p*_beta(v) = exp((1 - beta) b_A.v + beta b.v) prod_j (1 + exp(beta (c_j + W_j.v)));
    the transitions are block-Gibbs steps of the joint at beta, which leave p_beta invariant. Returns
    log Z_A + log mean_runs w with log Z_A = H log 2 + sum_i softplus(b_A,i). The estimate of Z is unbiased,
    so log Z is underestimated on average (the NLL it gives is, if anything, optimistic by the AIS error).
    """
    betas = ais_betas(n_betas).tolist()
    hidden = weight.shape[0]
    v = torch.bernoulli(torch.sigmoid(base_bias).expand(n_runs, -1).contiguous(), generator=generator)
    log_w = torch.zeros(n_runs, dtype=torch.float64, device=weight.device)
    db = (b - base_bias).double()
    for k in range(1, len(betas)):
        beta, prev = betas[k], betas[k - 1]
        a = F.linear(v, weight, c)
        a64 = a.double()
        log_w += (beta - prev) * (v.double() @ db) + (F.softplus(beta * a64) - F.softplus(prev * a64)).sum(1)
        if k < len(betas) - 1:  # the transition T_beta(v): Gibbs on the joint at inverse temperature beta
            h = torch.bernoulli(torch.sigmoid(beta * a), generator=generator)
            v = torch.bernoulli(torch.sigmoid((1 - beta) * base_bias + beta * F.linear(h, weight.t(), b)),
                                generator=generator)
    log_za = hidden * math.log(2.0) + float(F.softplus(base_bias.double()).sum())
    return log_za + float(torch.logsumexp(log_w, 0)) - math.log(n_runs)


class RBM(Autoencoder):
    """Binary-binary RBM trained by PCD; ``log_likelihood`` is exact up to its AIS estimate of log Z.

    ``loss`` in training mode advances the persistent chains (a buffer, so a resumed run continues them)
    and tracks the mean training image (the AIS base rate); in eval mode it changes nothing.
    """

    Config = RBMConfig
    probabilistic = True  # the code p(h|v) is the mean of a factorised Bernoulli; its variance is p(1-p)
    latent_space = "binary"  # hidden units in {0, 1}: N(0, I) is not its prior (the gibbs sampler draws from it)
    card = {
        "objective": "PCD surrogate mean_batch F(x) - mean_chains F(v~), F(v) = -b.v - sum_j softplus(c_j + W_j.v); "
                     "its gradient is PCD's estimate of the gradient of -log p(x); v~: n_chains persistent chains "
                     "advanced gibbs_steps block-Gibbs steps per update",
        "reduction": "free energies in nats per image (sum over pixels), mean over batch and chains; "
                     "reconstruction (monitor, not trained): BCE of sigmoid(W^T p(h|x) + b) summed over pixels, "
                     "mean over batch",
        "weights": "none; n_chains=100, gibbs_steps=1, init_std=0.01 (b = c = 0); log p(x) = -F(x) - log Z with "
                   "log Z by AIS, n_betas=14500, n_runs=100, base rate = the mean training image",
        "optimisers": "W, b, c by the suite's optimiser (train.optimizer, lr, weight_decay); the backbone is not "
                      "used; needs the bernoulli likelihood; the code's logvar is log p(1-p) (Bernoulli variance)",
        "paper": "Smolensky 1986; Hinton 2002 (CD); Tieleman 2008 (PCD); Salakhutdinov & Murray 2008 (AIS)",
    }

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: Any, latent_dim: int,
                 config: RBMConfig | None = None):
        if not (isinstance(encoder, nn.Linear) and isinstance(decoder, VisibleLayer)):
            raise AebenchError("the RBM has its own weights and no backbone: make it with build_model or "
                               "RBM.from_shape")
        if getattr(likelihood, "name", None) != "bernoulli":
            raise AebenchError(f"the RBM has binary visible units and needs likelihood 'bernoulli', got "
                               f"{getattr(likelihood, 'name', likelihood)!r}")
        super().__init__(encoder, decoder, likelihood, latent_dim, config)
        d = encoder.in_features
        self.register_buffer("chains", torch.bernoulli(torch.full((self.config.n_chains, d), 0.5)))
        self.register_buffer("data_mean", torch.zeros(d))
        self.register_buffer("data_count", torch.zeros((), dtype=torch.float64))
        self._log_z: tuple[list[torch.Tensor], tuple[int, int], float] | None = None

    @classmethod
    def from_shape(cls, image_shape: Sequence[int], latent_dim: int, likelihood: Any,
                   config: RBMConfig | None = None) -> RBM:
        """An RBM on images of ``image_shape`` with ``latent_dim`` hidden units (what build_model calls)."""
        config = config if config is not None else cls.Config()
        encoder = nn.Linear(math.prod(image_shape), latent_dim)  # W (H, D) and the hidden biases c
        nn.init.normal_(encoder.weight, 0.0, config.init_std)
        nn.init.zeros_(encoder.bias)
        return cls(encoder, VisibleLayer(image_shape), likelihood, latent_dim, config)

    @property
    def W(self) -> torch.Tensor:
        return self.encoder.weight

    @property
    def b(self) -> torch.Tensor:
        return self.decoder.bias

    @property
    def c(self) -> torch.Tensor:
        return self.encoder.bias

    # -- the autoencoder interface ------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> Encoding:
        a = self.encoder(x.flatten(1))
        return Encoding(torch.sigmoid(a), -F.softplus(a) - F.softplus(-a))  # log p(1 - p), finite

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Logits W^T h + b of p(v | h), image-shaped."""
        return self.decoder(z, self.W)

    def free_energy(self, x: torch.Tensor) -> torch.Tensor:
        return free_energy(x.flatten(1), self.W, self.b, self.c)

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        v = x.flatten(1)
        with torch.no_grad():
            chains = self.chains
            for _ in range(self.config.gibbs_steps):
                chains, _ = gibbs_step(chains, self.W, self.b, self.c)
            if self.training:
                self.chains.copy_(chains)
                self.data_count += v.shape[0]  # a running mean without a host sync
                self.data_mean += (v.mean(0) - self.data_mean) * (v.shape[0] / self.data_count).float()
        f_data = self.free_energy(v)
        surrogate = f_data.mean() - free_energy(chains, self.W, self.b, self.c).mean()
        with torch.no_grad():
            rec = self.likelihood.nll(self.decode(self.encode(x).mean), x).mean()
        return {"loss": surrogate, "reconstruction": rec, "free_energy": f_data.detach().mean()}

    # -- likelihood -----------------------------------------------------------------------------------------
    def base_bias(self) -> torch.Tensor:
        """AIS base-rate visible biases: the log-odds of the mean training image (smoothed), else b."""
        if float(self.data_count) == 0:
            return self.b.detach()
        p = (self.data_mean * self.data_count + 0.5) / (self.data_count + 1.0)  # a pixel never on is not -inf
        return torch.logit(p.float())

    @torch.no_grad()
    def log_partition(self, generator: torch.Generator | None = None) -> float:
        """log Z by AIS, computed once for the current weights and reused until they change."""
        state = [t.detach().clone() for t in (self.W, self.b, self.c, self.base_bias())]
        key = (self.config.n_betas, self.config.n_runs)
        cached = self._log_z
        if cached is not None and cached[1] == key and all(torch.equal(a, s) for a, s in zip(cached[0], state)):
            return cached[2]
        value = ais_log_partition(self.W, self.b, self.c, state[3], *key, generator=generator)
        self._log_z = (state, key, value)
        return value

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = -F(x) - log Z per image (float64), log Z by AIS (the ``nll`` metric's route for the RBM)."""
        return -self.free_energy(x).double() - self.log_partition()


class GibbsSampler(Sampler):
    """Block-Gibbs chains of an RBM from uniformly random visible states, ``steps`` steps each; returns the
    chains' final hidden states, which the RBM's ``generate`` maps to the mean images p(v | h).

    ``seed``: None draws the chains from the caller's generator (the job's seeded one); an int, from a
    generator of its own. The chains run on the model's device with a generator seeded from that draw.
    """

    def __init__(self, steps: int = 1000, seed: int | None = None, batch: int = 1000):
        if steps < 1:
            raise AebenchError(f"steps must be >= 1, got {steps}")
        if batch < 1:
            raise AebenchError(f"batch must be >= 1, got {batch}")
        self.steps, self.seed, self.batch = steps, seed, batch

    def applies_to(self, model: Any) -> str | None:
        if isinstance(model, RBM):
            return None
        return f"the gibbs sampler runs an RBM's Gibbs chains; {type(model).__name__} is not an RBM"

    def fit(self, codes: torch.Tensor, model: Any = None) -> GibbsSampler:
        reason = "the gibbs sampler needs the trained model" if model is None else self.applies_to(model)
        if reason:
            raise AebenchError(reason)
        self.model = model
        return self

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        source = generator if self.seed is None else torch.Generator().manual_seed(self.seed)
        seed = int(torch.randint(0, 2**62, (1,), generator=source))
        m = self.model
        W, b, c = m.W.detach(), m.b.detach(), m.c.detach()
        gen = torch.Generator(device=W.device).manual_seed(seed)
        out = []
        for i in range(0, n, self.batch):
            v = torch.bernoulli(torch.full((min(self.batch, n - i), W.shape[1]), 0.5, device=W.device), generator=gen)
            for _ in range(self.steps):
                v, h = gibbs_step(v, W, b, c, gen)
            out.append(h.float().cpu())
        return torch.cat(out) if out else torch.zeros(0, W.shape[0])
