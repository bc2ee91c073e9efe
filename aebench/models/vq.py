"""Vector-quantised autoencoders: VQ-VAE (van den Oord et al. 2017) and HRQ-VAE (Hosking et al. 2022).

The code grid: both backbones end in a linear map to a flat code of ``latent_dim`` numbers (the conv backbone
too: its last encoder layer is linear, not a feature map), so the grid is one-dimensional. The code is split
into ``n_positions = latent_dim / embedding_dim`` consecutive vectors of ``embedding_dim`` numbers, each
quantised on its own; ``embedding_dim`` defaults to ``latent_dim`` (one vector per image, what pythae does
with a flat encoder). ``encode`` returns the quantised code flattened back to ``latent_dim`` numbers (pythae's
``z``): decoders, samplers and metrics see what the decoder was trained on.

Quantised models share the small interface the ``pixelcnn`` sampler and the ``codebook`` metric use:
``quantised = True``, ``num_embeddings`` (codes per level), ``num_levels``, ``n_positions``,
``image_indices(x)`` and ``code_indices(z)`` -> (N, n_positions, num_levels) long, ``code_vectors(idx)`` ->
(N, latent_dim).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from aebench.errors import AebenchError
from aebench.models.base import Autoencoder, Encoding, ModelConfig

EMA_EPSILON = 1e-5  # Laplace smoothing of the EMA cluster sizes (Sonnet, pythae)
MIN_TEMPERATURE = 0.5  # floor of HRQ-VAE's Gumbel temperature (pythae)


# -- the quantisation arithmetic (module functions, so the tests can check them by hand) ---------------------
def squared_distances(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """||z_m - e_k||^2 for z (M, D) and codebook (K, D), shaped (M, K), without an (M, K, D) intermediate."""
    return z.pow(2).sum(-1, keepdim=True) + codebook.pow(2).sum(-1) - 2 * z @ codebook.T


def nearest(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest code for every row of z (M, D)."""
    return squared_distances(z, codebook).argmin(-1)


def straight_through(z_e: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """z_q in the forward pass; the identity in the backward pass (d out / d z_e = I, no gradient to z_q)."""
    return z_e + (z_q - z_e).detach()


def vq_losses(z_e: torch.Tensor, z_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image (first dimension): the codebook loss ||sg[z_e] - z_q||^2 and the commitment loss
    ||z_e - sg[z_q]||^2, each summed over every number of the code (van den Oord et al. 2017, eq. 3)."""
    codebook = (z_e.detach() - z_q).pow(2).flatten(1).sum(1)
    commitment = (z_e - z_q.detach()).pow(2).flatten(1).sum(1)
    return codebook, commitment


@torch.no_grad()
def ema_update(codebook: torch.Tensor, cluster_size: torch.Tensor, embed_sum: torch.Tensor, z: torch.Tensor,
               idx: torch.Tensor, decay: float, epsilon: float = EMA_EPSILON) -> None:
    """One EMA codebook step, in place (van den Oord et al. 2017, appendix A.1; Laplace smoothing as Sonnet).

    N_k <- decay N_k + (1 - decay) n_k and m_k <- decay m_k + (1 - decay) sum_{i: idx_i = k} z_i, then
    e_k = m_k / N~_k with N~_k = (N_k + epsilon) / (n + K epsilon) * n and n = sum_k N_k. ``cluster_size``
    keeps the unsmoothed N_k; the smoothing only keeps unused codes from dividing by zero.
    """
    k = codebook.shape[0]
    onehot = F.one_hot(idx, k).to(z.dtype)
    cluster_size.mul_(decay).add_(onehot.sum(0), alpha=1 - decay)
    embed_sum.mul_(decay).add_(onehot.T @ z, alpha=1 - decay)
    n = cluster_size.sum()
    smoothed = (cluster_size + epsilon) / (n + k * epsilon) * n
    codebook.copy_(embed_sum / smoothed.unsqueeze(1))


def residual_decompose(z: torch.Tensor, codebooks: Sequence[torch.Tensor], beam: int = 32
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (M, L) with sum_l codebooks[l][idx_l] closest to z (M, D), by a beam search over the levels, and
    the distance (M,) left between z and that sum.

    Greedy residual quantisation (beam 1) is what HRQ-VAE's encoder does to its encoder output; a quantised
    sum is decomposed back exactly (distance ~0) as long as its true path stays among the ``beam`` best.
    """
    m = z.shape[0]
    resid = z.unsqueeze(1)  # (M, b, D)
    paths = torch.zeros(m, 1, 0, dtype=torch.long, device=z.device)
    rows = torch.arange(m, device=z.device).unsqueeze(1)
    for w in codebooks:
        k = w.shape[0]
        err = (resid.pow(2).sum(-1, keepdim=True) + w.pow(2).sum(-1) - 2 * resid @ w.T).flatten(1)  # (M, b*K)
        top = err.topk(min(beam, err.shape[1]), dim=1, largest=False).indices
        parent, code = top // k, top % k
        resid = resid[rows, parent] - w[code]
        paths = torch.cat([paths[rows, parent], code.unsqueeze(-1)], dim=-1)
    dist = resid.norm(dim=-1)  # recomputed exactly: the expanded form above can be off by rounding
    best = dist.argmin(1)
    return paths[rows.squeeze(1), best], dist[rows.squeeze(1), best]


# -- the shared base -----------------------------------------------------------------------------------------
class QuantisedAutoencoder(Autoencoder):
    """Common grid logic: the flat code viewed as (n_positions, embedding_dim) vectors."""

    quantised: ClassVar[bool] = True
    num_levels: int = 1

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: Any, latent_dim: int,
                 config: ModelConfig | None = None):
        super().__init__(encoder, decoder, likelihood, latent_dim, config)
        d = self.config.embedding_dim or self.latent_dim
        if self.latent_dim % d:
            raise AebenchError(f"latent_dim {self.latent_dim} is not a multiple of embedding_dim {d}: the code is "
                               "split into latent_dim / embedding_dim vectors")
        self.embedding_dim, self.n_positions = d, self.latent_dim // d
        self.num_embeddings = self.config.num_embeddings

    def grid(self, h: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) -> (B, n_positions, embedding_dim)."""
        return h.reshape(h.shape[0], self.n_positions, self.embedding_dim)

    def image_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Code indices (B, P, L) of images, from the encoder output as the model quantises it (the metric's)."""
        raise NotImplementedError

    def code_indices(self, z: torch.Tensor) -> torch.Tensor:
        """Code indices (N, P, L) of codes from ``encode`` (what samplers are fitted on)."""
        raise NotImplementedError

    def code_vectors(self, idx: torch.Tensor) -> torch.Tensor:
        """The quantised codes (N, latent_dim) of indices (N, P, L): the decoder's input."""
        raise NotImplementedError


def _check_grid_config(cfg: Any) -> None:
    if cfg.num_embeddings < 1:
        raise AebenchError(f"num_embeddings must be >= 1, got {cfg.num_embeddings}")
    if cfg.embedding_dim is not None and cfg.embedding_dim < 1:
        raise AebenchError(f"embedding_dim must be >= 1 (or null for latent_dim), got {cfg.embedding_dim}")


# -- VQ-VAE ---------------------------------------------------------------------------------------------------
@dataclass
class VQVAEConfig(ModelConfig):
    num_embeddings: int = 512  # codebook size K (pythae)
    embedding_dim: int | None = None  # numbers per quantised vector; None: latent_dim (one vector per image)
    commitment_loss_factor: float = 0.25  # beta
    quantization_loss_factor: float = 1.0  # weight of the codebook loss (unused with EMA)
    use_ema: bool = False  # codebook as an exponential moving average of its assigned encoder outputs
    decay: float = 0.99  # EMA decay gamma
    epsilon: float = EMA_EPSILON  # EMA Laplace smoothing

    def __post_init__(self) -> None:
        _check_grid_config(self)
        if self.commitment_loss_factor < 0 or self.quantization_loss_factor < 0:
            raise AebenchError("commitment_loss_factor and quantization_loss_factor must be >= 0")
        if not 0.0 <= self.decay < 1.0:
            raise AebenchError(f"decay must be in [0, 1), got {self.decay}")
        if self.epsilon <= 0:
            raise AebenchError(f"epsilon must be > 0, got {self.epsilon}")


class VQVAE(QuantisedAutoencoder):
    """VQ-VAE: nearest-code quantisation of each code vector, straight-through gradient, codebook and
    commitment losses; optionally an EMA codebook (no dead-code restarts: pythae has none either)."""

    Config = VQVAEConfig
    card = {
        "objective": "-log p(x | z_q) + quantization_loss_factor * ||sg[z_e] - z_q||^2 + commitment_loss_factor * "
                     "||z_e - sg[z_q]||^2, z_q = nearest code of each embedding_dim-vector of z_e, decoder input "
                     "z_e + sg[z_q - z_e] (straight-through); use_ema drops the codebook term and sets e_k = "
                     "EMA(sum of assigned z_e) / EMA(count), Laplace-smoothed",
        "reduction": "reconstruction summed over pixels; both VQ terms summed over all latent_dim numbers of the "
                     "code (pythae averages them, i.e. /latent_dim); mean over batch",
        "weights": "commitment_loss_factor 0.25, quantization_loss_factor 1, num_embeddings 512, embedding_dim "
                   "latent_dim (one vector per image), use_ema false, decay 0.99, epsilon 1e-5",
        "optimisers": "one optimiser (train.optimizer) for encoder, decoder and codebook; with use_ema the codebook "
                      "is a buffer moved by the EMA in each training step, not by the optimiser",
        "paper": "van den Oord, Vinyals, Kavukcuoglu. Neural Discrete Representation Learning. NeurIPS 2017",
    }

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: Any, latent_dim: int,
                 config: VQVAEConfig | None = None):
        super().__init__(encoder, decoder, likelihood, latent_dim, config)
        k = self.num_embeddings
        init = torch.empty(k, self.embedding_dim).uniform_(-1.0 / k, 1.0 / k)  # pythae / Sonnet
        if self.config.use_ema:
            self.register_buffer("codebook", init)
            # a consistent start (each code seen once, at itself): pythae's zero counts send unused codes to ~1e5
            self.register_buffer("cluster_size", torch.ones(k))
            self.register_buffer("embed_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)

    def _quantise(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z_e (B, P, D) -> the nearest codes (B, P, D) and their indices (B, P)."""
        idx = nearest(z_e.reshape(-1, self.embedding_dim), self.codebook).view(z_e.shape[:2])
        return self.codebook[idx], idx

    def encode(self, x: torch.Tensor) -> Encoding:
        z_q, _ = self._quantise(self.grid(self.encoder(x)))
        return Encoding(z_q.flatten(1))

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z_e = self.grid(self.encoder(x))
        z_q, idx = self._quantise(z_e)
        codebook, commitment = (t.mean() for t in vq_losses(z_e, z_q))
        rec = self.likelihood.nll(self.decode(straight_through(z_e, z_q).flatten(1)), x).mean()
        cfg = self.config
        if cfg.use_ema:
            if self.training:
                ema_update(self.codebook, self.cluster_size, self.embed_sum, z_e.detach().reshape(-1, z_e.shape[-1]),
                           idx.flatten(), cfg.decay, cfg.epsilon)
            total = rec + cfg.commitment_loss_factor * commitment
            codebook = codebook.detach()  # reported, not trained: the EMA moves the codebook
        else:
            total = rec + cfg.quantization_loss_factor * codebook + cfg.commitment_loss_factor * commitment
        return {"loss": total, "reconstruction": rec, "codebook": codebook, "commitment": commitment}

    def image_indices(self, x: torch.Tensor) -> torch.Tensor:
        return self._quantise(self.grid(self.encoder(x)))[1].unsqueeze(-1)

    def code_indices(self, z: torch.Tensor) -> torch.Tensor:
        """Indices of codes (N, latent_dim), shaped (N, P, 1): exact for codes from ``encode``."""
        return self._quantise(self.grid(z.to(self.codebook.dtype)))[1].unsqueeze(-1)

    def code_vectors(self, idx: torch.Tensor) -> torch.Tensor:
        return self.codebook[idx[..., 0]].flatten(1)


# -- HRQ-VAE --------------------------------------------------------------------------------------------------
@dataclass
class HRQVAEConfig(ModelConfig):
    num_embeddings: int = 64  # codes per level (pythae)
    num_levels: int = 4  # depth of the hierarchy
    embedding_dim: int | None = None  # numbers per quantised vector; None: latent_dim (one vector per image)
    kl_weight: float = 0.1  # weight of KL(uniform || softmax(-distances)) per level
    init_scale: float = 1.0  # norm of the first level's codes at initialisation
    init_decay_weight: float = 0.5  # each level's initial norm is this times the previous one's
    norm_loss_weight: float | None = 0.5  # null disables the norm loss
    norm_loss_scale: float = 1.5
    temp_schedule_gamma: float = 33.333  # Gumbel temperature max(exp(-epoch / (gamma 1.5^level)), 0.5)
    depth_drop_rate: float = 0.1  # probability of dropping a level (and all below it) in training
    steps_per_epoch: int = 469  # what an "epoch" of the schedule is (MNIST's 60k at batch 128); the model counts steps

    def __post_init__(self) -> None:
        _check_grid_config(self)
        if self.num_levels < 1:
            raise AebenchError(f"num_levels must be >= 1, got {self.num_levels}")
        if self.kl_weight < 0 or (self.norm_loss_weight is not None and self.norm_loss_weight < 0):
            raise AebenchError("kl_weight and norm_loss_weight must be >= 0")
        if self.init_scale <= 0 or self.init_decay_weight <= 0 or self.norm_loss_scale <= 0:
            raise AebenchError("init_scale, init_decay_weight and norm_loss_scale must be > 0")
        if self.temp_schedule_gamma <= 0 or self.steps_per_epoch < 1:
            raise AebenchError("temp_schedule_gamma must be > 0 and steps_per_epoch >= 1")
        if not 0.0 <= self.depth_drop_rate < 1.0:
            raise AebenchError(f"depth_drop_rate must be in [0, 1), got {self.depth_drop_rate}")


class HRQVAE(QuantisedAutoencoder):
    """HRQ-VAE: L codebooks quantise the residual left by the levels above; Gumbel-softmax in training."""

    Config = HRQVAEConfig
    card = {
        "objective": "-log p(x | z_q) + kl_weight * sum_l KL(U(K) || softmax(-||r_l - e_lk||^2)) + norm_loss_weight "
                     "* mean_l (max(norm_loss_scale ||q_l+1|| / ||q_l||, 1) - 1)^2; r_l = z_e - sum_{m<l} q_m, "
                     "q_l = hard Gumbel-softmax sample (training, temperature max(exp(-epoch / (gamma 1.5^l)), "
                     "0.5)) or nearest code (eval); z_q = sum_l q_l with depth dropout in training",
        "reduction": "reconstruction summed over pixels; KL and norm terms summed over code positions (one "
                     "position by default, then equal to pythae's mean); mean over batch",
        "weights": "num_embeddings 64, num_levels 4, kl_weight 0.1, init_scale 1, init_decay_weight 0.5, "
                   "norm_loss_weight 0.5, norm_loss_scale 1.5, temp_schedule_gamma 33.333 epochs of "
                   "steps_per_epoch 469 steps, depth_drop_rate 0.1",
        "optimisers": "one optimiser (train.optimizer) for encoder, decoder and the codebooks",
        "paper": "Hosking, Tang, Lapata. Hierarchical Sketch Induction for Paraphrase Generation. ACL 2022",
    }

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: Any, latent_dim: int,
                 config: HRQVAEConfig | None = None):
        super().__init__(encoder, decoder, likelihood, latent_dim, config)
        cfg = self.config
        self.num_levels = cfg.num_levels
        books = []
        for level in range(cfg.num_levels):
            w = torch.empty(self.num_embeddings, self.embedding_dim).uniform_(-1.0, 1.0)
            books.append(nn.Parameter(w / w.norm(dim=1, keepdim=True) * cfg.init_scale * cfg.init_decay_weight**level))
        self.codebooks = nn.ParameterList(books)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # training steps taken (in checkpoints)

    def temperatures(self) -> list[float]:
        """The Gumbel temperature of each level now; the epoch counts from 1, as pythae's trainer."""
        epoch = 1 + int(self.steps) // self.config.steps_per_epoch
        gamma = self.config.temp_schedule_gamma
        return [max(math.exp(-epoch / (gamma * 1.5**level)), MIN_TEMPERATURE) for level in range(self.num_levels)]

    def _quantise(self, z: torch.Tensor, sample: bool) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """z (M, D) -> per-level quantised vectors (M, L, D), logits and indices per level."""
        temps = self.temperatures() if sample else None
        quantised, logits, indices = [], [], []
        resid = z
        for level, w in enumerate(self.codebooks):
            if level > 0:
                resid = z - torch.stack(quantised, 1).sum(1)
            lg = -squared_distances(resid, w)
            onehot = (F.gumbel_softmax(lg, tau=temps[level], hard=True, dim=-1) if sample
                      else F.one_hot(lg.argmax(-1), self.num_embeddings).to(z.dtype))
            quantised.append(onehot @ w)
            logits.append(lg)
            indices.append(onehot.argmax(-1))
        return torch.stack(quantised, 1), logits, indices

    def encode(self, x: torch.Tensor) -> Encoding:
        z = self.grid(self.encoder(x))
        q, _, _ = self._quantise(z.reshape(-1, self.embedding_dim), sample=False)
        return Encoding(q.sum(1).reshape(z.shape[0], -1))

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.config
        z = self.grid(self.encoder(x))
        b = z.shape[0]
        q, logits, _ = self._quantise(z.reshape(-1, self.embedding_dim), sample=self.training)
        log_k = math.log(self.num_embeddings)
        kl = sum(-log_k - F.log_softmax(lg, -1).mean(-1) for lg in logits)  # KL(uniform || q) per position
        kl = kl.view(b, -1).sum(1).mean()
        norms = q.norm(dim=-1)  # (M, L)
        if self.num_levels > 1:
            ratio = norms[:, 1:] / norms[:, :-1].clamp_min(1e-12) * cfg.norm_loss_scale
            norm = (ratio.clamp_min(1.0) - 1.0).pow(2).mean(1).view(b, -1).sum(1).mean()
        else:
            norm = torch.zeros((), device=z.device)
        if self.training and cfg.depth_drop_rate > 0:
            keep = torch.bernoulli(torch.full((*q.shape[:2], 1), 1 - cfg.depth_drop_rate, device=q.device))
            q = q * torch.cumprod(keep, dim=1)  # a dropped level drops every level below it
        rec = self.likelihood.nll(self.decode(q.sum(1).reshape(b, -1)), x).mean()
        total = rec + cfg.kl_weight * kl
        if cfg.norm_loss_weight is not None:
            total = total + cfg.norm_loss_weight * norm
        return {"loss": total, "reconstruction": rec, "kl": kl, "norm": norm}

    def train_step(self, x: torch.Tensor, optimizers: Sequence[torch.optim.Optimizer],
                   grad_clip: float | None = None) -> dict[str, torch.Tensor]:
        terms = super().train_step(x, optimizers, grad_clip)
        self.steps += 1
        return terms

    def image_indices(self, x: torch.Tensor) -> torch.Tensor:
        z = self.grid(self.encoder(x))
        _, _, idx = self._quantise(z.reshape(-1, self.embedding_dim), sample=False)
        return torch.stack(idx, -1).view(z.shape[0], self.n_positions, self.num_levels)

    def code_indices(self, z: torch.Tensor, beams: Sequence[int] = (32, 512), chunk: int = 1024) -> torch.Tensor:
        """Indices (N, P, L) of quantised codes (N, latent_dim), by a beam search over the levels (see
        ``residual_decompose``); vectors not matched exactly are searched again with the next, wider beam.
        Exact for codes from ``encode`` unless even the widest beam loses the true path (then the closest sum)."""
        flat = self.grid(z.to(self.codebooks[0].dtype)).reshape(-1, self.embedding_dim)
        books = [w.detach() for w in self.codebooks]
        idx = torch.empty(len(flat), self.num_levels, dtype=torch.long, device=flat.device)
        todo = torch.arange(len(flat), device=flat.device)
        for beam in beams:
            left = [todo[:0]]
            for part in todo.split(max(1, chunk * 32 // beam)):
                idx[part], dist = residual_decompose(flat[part], books, beam)
                left.append(part[dist > 1e-4 * flat[part].norm(dim=1).clamp_min(1.0)])
            todo = torch.cat(left)
            if len(todo) == 0:
                break
        return idx.view(z.shape[0], self.n_positions, self.num_levels)

    def code_vectors(self, idx: torch.Tensor) -> torch.Tensor:
        return sum(w[idx[..., level]] for level, w in enumerate(self.codebooks)).flatten(1)
