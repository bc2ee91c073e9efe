"""The Hopfield network (Hopfield 1982): storage of binarised images and asynchronous recall.

Units s_i = +-1 (pixels binarised at 0.5), symmetric weights W with a zero diagonal and thresholds theta, energy
E(s) = -1/2 s^T W s + theta^T s. Recall updates one unit at a time, s_i <- sign(h_i) with the field
h_i = sum_j W_ij s_j - theta_i (kept on a tie), in a random order per sweep drawn from a seeded generator, until a
sweep changes nothing (a fixed point) or ``max_sweeps``. Each update lowers E or leaves it, so recall ends in a
local minimum. Three storage rules (``rule``) for the K stored patterns xi_mu:

- ``hebbian`` (Hopfield 1982): W = (1/N) sum_mu xi_mu xi_mu^T, theta = 0. Capacity about 0.138 N random
  unbiased patterns (Amit, Gutfreund & Sompolinsky 1985). Sparse, correlated images (MNIST digits: mostly
  background) share one large component, and recall collapses to that background attractor.
- ``centred`` (biased patterns; Amit, Gutfreund & Sompolinsky 1987, Phys. Rev. A 35, 2293): with a_i the mean
  activity of unit i over the stored patterns (+-1 coding), W = (1/N) sum_mu (xi_mu - a)(xi_mu - a)^T and the
  matching threshold theta_i = -q a_i, q = 1 - (1/N) sum_j a_j^2: a stored pattern's own term in h_i, on
  average over patterns, is then (xi_i - a_i) q + a_i q = q xi_i, the same margin for on and off pixels. For
  AGS's independent biased patterns a_i -> a, the rule they analyse, with theta -> -a (1 - a^2); for a = 0 it is
  the Hebbian rule. Per-unit means also remove what all images share (a digit's stroke area), which a single a does not:
  on binarised MNIST only they avoid the collapse. One stored pattern has a = xi and no weights (use k >= 2).
- ``projection`` (pseudo-inverse; Personnaz, Guyon & Dreyfus 1986): W = (1/N) P^T C^+ P with P the (K, N) patterns
  and C = P P^T / N their overlap matrix (Moore-Penrose inverse), zero diagonal, theta = 0. Every linearly
  independent stored pattern is a fixed point whatever the correlations (until K nears N, when the basins
  shrink to nothing): the rule for correlated images.

There is no gradient training. The runner's training loop still runs (the model keeps the suite's interface):
``train_step`` stores the first ``n_stored`` images it is shown (epoch 1's seeded order, so the job's seed picks
them) and then does nothing; ``configure_optimizers`` returns no optimizer and ``loss`` is zero, with the
energy of the batch and the number stored beside it for the curve. W is never materialised for recall: it is
kept as factors W = (1/N) L R^T (N x K each) and the field computed from the overlaps R^T s, kept up to date.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from torch import nn

from aebench.errors import AebenchError
from aebench.models.base import Autoencoder, Encoding, ModelConfig, TrainSettings

RULES = ("hebbian", "centred", "projection")


def to_spins(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] (B, ...) to +-1 states (B, N): +1 where the pixel exceeds 0.5."""
    return torch.where(x.flatten(1) > 0.5, 1.0, -1.0)


@dataclass
class HopfieldConfig(ModelConfig):
    n_stored: int | None = None  # patterns stored from training; None: the suite's latent_dim
    max_sweeps: int = 100  # recall stops at a fixed point or after this many sweeps
    seed: int = 0  # the update order's generator
    beta: float = 5.0  # inverse temperature turning the final fields into pixel probabilities sigmoid(2 beta h)
    rule: Literal["hebbian", "centred", "projection"] = "hebbian"  # the storage rule (module docstring)

    def __post_init__(self) -> None:
        if self.n_stored is not None and self.n_stored < 1:
            raise AebenchError(f"n_stored must be >= 1, got {self.n_stored}")
        if self.max_sweeps < 1:
            raise AebenchError(f"max_sweeps must be >= 1, got {self.max_sweeps}")
        if not self.beta > 0:
            raise AebenchError(f"beta must be > 0, got {self.beta}")
        if self.rule not in RULES:
            raise AebenchError(f"unknown rule {self.rule!r}; allowed: {', '.join(RULES)}")


class HebbianMemory(nn.Module):
    """The stored patterns P (capacity, N) as +-1 rows (unused rows are zero), the storage rule's weights and
    the recall dynamics. Weights are derived from the patterns whenever used (never stale after a load)."""

    def __init__(self, image_shape: Sequence[int], capacity: int, rule: str = "hebbian"):
        super().__init__()
        if rule not in RULES:
            raise AebenchError(f"unknown rule {rule!r}; allowed: {', '.join(RULES)}")
        self.shape = tuple(image_shape)
        self.n = math.prod(self.shape)
        self.rule = rule
        self.register_buffer("patterns", torch.zeros(capacity, self.n))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self._cached: tuple[tuple[int, int, int], Any] | None = None  # factors, keyed by the patterns' state

    @property
    def capacity(self) -> int:
        return self.patterns.shape[0]

    def store(self, images: torch.Tensor) -> int:
        """Storage of as many of ``images`` as there is room for; returns how many were stored."""
        k = int(self.count)
        take = min(self.capacity - k, images.shape[0])
        if take > 0:
            self.patterns[k : k + take] = to_spins(images[:take]).to(self.patterns)
            self.count += take
        return max(take, 0)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(L, R, d, theta) in float64 with W = (1/N) L R^T off the diagonal (L, R: (N, K)), d = diag((1/N) L R^T)
        (removed) and theta the thresholds (N,); for ``hebbian`` L = R = P^T, integers, so overlaps are exact.
        Cached until the patterns change (a store, a load, a move): every training step logs the batch's energy."""
        key = (int(self.count), self.patterns.data_ptr(), self.patterns._version)
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, self._factors())
        return self._cached[1]

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        p = self.patterns[: int(self.count)].double()  # (K, N)
        theta = torch.zeros(self.n, dtype=torch.float64, device=p.device)
        if self.rule == "centred" and p.shape[0]:
            a = p.mean(0)
            theta = -a * (1 - float((a * a).mean()))
            p = p - a
        left = p.t()
        right = left
        if self.rule == "projection" and p.shape[0]:
            right = left @ torch.linalg.pinv(p @ p.t() / self.n, hermitian=True)
        d = (left * right).sum(1) / self.n
        return left.contiguous(), right.contiguous(), d, theta

    def weight(self) -> torch.Tensor:
        """W (N, N) with a zero diagonal, in the patterns' dtype."""
        left, right, _, _ = self.factors()
        return (left @ right.t() / self.n).fill_diagonal_(0.0).to(self.patterns)

    def threshold(self) -> torch.Tensor:
        """theta (N,), in the patterns' dtype."""
        return self.factors()[3].to(self.patterns)

    def field(self, s: torch.Tensor) -> torch.Tensor:
        """h = W s - theta per row of s (B, N)."""
        left, right, d, theta = self.factors()
        sd = s.double()
        return ((sd @ right) @ left.t() / self.n - d * sd - theta).to(s.dtype)

    def energy(self, s: torch.Tensor) -> torch.Tensor:
        """E(s) = -1/2 s^T W s + theta^T s per row of s."""
        theta = self.threshold()
        return -0.5 * (s * (self.field(s) + theta)).sum(1) + s @ theta

    def relax(self, s: torch.Tensor, free: torch.Tensor | None = None, max_sweeps: int = 100, seed: int = 0,
              trace: Callable[[torch.Tensor, int], None] | None = None) -> tuple[torch.Tensor, int]:
        """Asynchronous deterministic updates of states ``s`` (B, N) in {-1, 0, +1} until no unit changes.

        ``free`` (B, N) bool: only these units update (the others are clamped). 0 is an unknown unit: it
        contributes no field and becomes +-1 when updated. ``trace(s, i)`` is called after each single-unit
        update (tests). Returns the final states and the number of sweeps run.
        """
        dtype = s.dtype
        s = s.to(torch.float64, copy=True)  # float64: overlaps exact (hebbian) or drift-free (the others)
        left, right, d, theta = self.factors()
        m = s @ right  # overlaps R^T s (B, K)
        order_gen = torch.Generator().manual_seed(seed)
        sweeps = 0
        while sweeps < max_sweeps:
            sweeps += 1
            changed = torch.zeros(s.shape[0], dtype=torch.bool, device=s.device)
            for i in torch.randperm(self.n, generator=order_gen).tolist():
                old = s[:, i]
                h = m @ left[i] / self.n - d[i] * old - theta[i]
                new = torch.where(h > 0, 1.0, torch.where(h < 0, -1.0, old))
                if free is not None:
                    new = torch.where(free[:, i], new, old)
                delta = new - old
                m += delta.unsqueeze(1) * right[i]
                s[:, i] = new
                changed |= delta != 0
                if trace is not None:
                    trace(s.to(dtype), i)
            if not bool(changed.any()):
                break
        return s.to(dtype), sweeps


class Hopfield(Autoencoder):
    """Hopfield network: Hebbian (or centred, or projection) storage, asynchronous recall; its job is retrieval
    (metric ``retrieval``).

    In the autoencoder interface: ``reconstruct(x)`` is recall from x; the code of x is the overlap
    m_mu = xi_mu . s* / N of the recalled state s* with each stored pattern (one code dimension per pattern,
    the first ``latent_dim``, zero where none is stored); ``decode(m)`` recalls from the superposition
    sign(sum_mu m_mu xi_mu) and returns the logits 2 beta h of the final fields (Glauber's p(s_i = +1)).
    """

    Config = HopfieldConfig
    card = {
        "objective": "none (no gradient training): storage of the first n_stored training images shown (+-1 "
                     "pixels, binarised at 0.5) by rule hebbian W = (1/N) sum_mu xi_mu xi_mu^T, centred W = (1/N) "
                     "sum_mu (xi_mu - a)(xi_mu - a)^T (a: unit means) with threshold -a (1 - |a|^2 / N), or "
                     "projection W = (1/N) P^T C^+ P, "
                     "zero diagonal; recall by asynchronous updates s_i <- sign(W_i.s - theta_i), random order per "
                     "sweep, to a fixed point of E = -1/2 s^T W s + theta^T s",
        "reduction": "loss is 0; energy (monitor) is E of the binarised batch, mean over batch; stored: patterns held",
        "weights": "n_stored=latent_dim, max_sweeps=100, seed=0 (update order), beta=5 (pixel probabilities "
                   "sigmoid(2 beta h) for images and the recon metric), rule=hebbian",
        "optimisers": "none: the backbone and the suite's optimiser are not used; needs the bernoulli likelihood",
        "paper": "Hopfield 1982; capacity ~0.14 N: Amit, Gutfreund & Sompolinsky 1985; centred: Amit, Gutfreund & "
                 "Sompolinsky 1987 (biased patterns); projection: Personnaz, Guyon & Dreyfus 1986",
    }

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: Any, latent_dim: int,
                 config: HopfieldConfig | None = None):
        if not isinstance(encoder, HebbianMemory):
            raise AebenchError("the Hopfield net has no backbone: make it with build_model or Hopfield.from_shape")
        if getattr(likelihood, "name", None) != "bernoulli":
            raise AebenchError(f"the Hopfield net has binary units and needs likelihood 'bernoulli', got "
                               f"{getattr(likelihood, 'name', likelihood)!r}")
        super().__init__(encoder, decoder, likelihood, latent_dim, config)
        self._full = False  # memory full: train_step stops looking (re-derived after a resume)

    @classmethod
    def from_shape(cls, image_shape: Sequence[int], latent_dim: int, likelihood: Any,
                   config: HopfieldConfig | None = None) -> Hopfield:
        """A net with one unit per pixel, room for ``n_stored`` patterns (what build_model calls)."""
        config = config if config is not None else cls.Config()
        memory = HebbianMemory(image_shape, config.n_stored or latent_dim, config.rule)
        return cls(memory, nn.Identity(), likelihood, latent_dim, config)

    @property
    def memory(self) -> HebbianMemory:
        return self.encoder

    def store(self, images: torch.Tensor) -> int:
        """Store images (B, C, H, W) in [0, 1]; returns how many fitted."""
        return self.memory.store(images)

    def holding(self, k: int) -> Hopfield:
        """A fresh copy of this net (same rule and recall settings) that stored only the first k of its patterns:
        the retrieval metric's memory of size k (storage is cheap; the weights are those of k patterns)."""
        k = max(1, min(int(k), int(self.memory.count)))
        config = replace(self.config, n_stored=k)
        net = type(self).from_shape(self.memory.shape, self.latent_dim, self.likelihood, config)
        net.store(self.stored_patterns()[:k])
        return net.to(self.memory.patterns.device)

    def stored_patterns(self) -> torch.Tensor:
        """The stored patterns as images in {0, 1} (K, C, H, W)."""
        p = self.memory.patterns[: int(self.memory.count)]
        return ((p + 1) / 2).view(-1, *self.memory.shape)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E of the binarised images x, per image."""
        return self.memory.energy(to_spins(x).to(self.memory.patterns))

    @torch.no_grad()
    def recall(self, s: torch.Tensor, free: torch.Tensor | None = None, max_sweeps: int | None = None,
               trace: Callable[[torch.Tensor, int], None] | None = None) -> torch.Tensor:
        """The fixed point reached from states ``s`` (B, N)."""
        sweeps = self.config.max_sweeps if max_sweeps is None else max_sweeps
        return self.memory.relax(s, free, sweeps, self.config.seed, trace)[0]

    def _logits(self, s: torch.Tensor) -> torch.Tensor:
        return (2 * self.config.beta * self.memory.field(s)).view(s.shape[0], *self.memory.shape)

    # -- the autoencoder interface ------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> Encoding:
        s = self.recall(to_spins(x).to(self.memory.patterns))
        m = s @ self.memory.patterns.t() / self.memory.n  # (B, capacity); zero for empty rows
        code = torch.zeros(s.shape[0], self.latent_dim, device=s.device, dtype=s.dtype)
        d = min(self.latent_dim, m.shape[1])
        code[:, :d] = m[:, :d]
        return Encoding(code)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        d = min(self.latent_dim, self.memory.capacity)
        s = torch.sign(z[:, :d].to(self.memory.patterns) @ self.memory.patterns[:d])
        return self._logits(self.recall(s))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Recall from x itself (not through the code)."""
        return torch.sigmoid(self._logits(self.recall(to_spins(x).to(self.memory.patterns))))

    @torch.no_grad()
    def retrieve(self, x: torch.Tensor, known: torch.Tensor | None = None, steps: int | None = None) -> torch.Tensor:
        """The retrieval metric's route: recall from a corrupted image x in [0, 1] with the ``known`` pixels
        clamped (unknown ones start at 0: no information), at most ``steps`` sweeps; images in {0, 0.5, 1}."""
        s = to_spins(x).to(self.memory.patterns)
        free = None
        if known is not None:
            k = known.flatten(1).to(s.device)
            s = torch.where(k, s, torch.zeros_like(s))
            free = ~k
        return ((self.recall(s, free, steps) + 1) / 2).view(x.shape)

    # -- "training": storage ------------------------------------------------------------------------------
    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        zero = torch.zeros((), device=x.device)
        return {"loss": zero, "energy": self.energy(x).mean(), "stored": self.memory.count.to(zero)}

    def configure_optimizers(self, train: TrainSettings) -> list[torch.optim.Optimizer]:
        return []

    def train_step(self, x: torch.Tensor, optimizers: Sequence[torch.optim.Optimizer],
                   grad_clip: float | None = None) -> dict[str, torch.Tensor]:
        """Store the batch's images while there is room (a host sync only until full); nothing to optimise."""
        if not self._full:
            self.store(x)
            self._full = int(self.memory.count) >= self.memory.capacity
        return {k: v.detach() for k, v in self.loss(x).items()}
