"""A PixelCNN prior over a quantised model's code indices (van den Oord et al. 2016, as the VQ-VAE paper uses).

The code grid of aebench's quantised models is one-dimensional (see ``aebench.models.vq``), so the PixelCNN is
too: masked 1-D convolutions over the sequence of indices in a fixed causal order, position by position and,
for HRQ-VAE, level by level within a position (token t = position * num_levels + level). The first layer's
mask (type A) hides the current token, later ones (type B) show it, so logits at t depend on tokens < t only.
Sampling draws the tokens one by one and returns the quantised code vectors the model's decoder takes.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aebench.errors import AebenchError
from aebench.models.samplers import Sampler


class MaskedConv1d(nn.Conv1d):
    """A 'same'-padded 1-D convolution whose kernel sees only the past (type A) or the past and now (type B)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, mask_type: str):
        if kernel % 2 == 0 or mask_type not in ("A", "B"):
            raise ValueError("kernel must be odd and mask_type 'A' or 'B'")
        super().__init__(c_in, c_out, kernel, padding=kernel // 2)
        mask = torch.ones(kernel)
        mask[kernel // 2 + (mask_type == "B") :] = 0
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight * self.mask, self.bias, padding=self.padding)


class PixelCNN1d(nn.Module):
    """Token embedding, a type-A masked convolution, residual type-B blocks, then logits over each level's codes.

    Tokens of level l are embedded as l * K + k, and a learned per-position bias on the logits (independent of
    the input, so causal) lets each position keep its own marginal.
    """

    def __init__(self, num_embeddings: int, num_levels: int, length: int, channels: int, layers: int, kernel: int):
        super().__init__()
        self.k, self.levels = num_embeddings, num_levels
        self.embed = nn.Embedding(num_embeddings * num_levels, channels)
        self.first = MaskedConv1d(channels, channels, kernel, "A")
        self.blocks = nn.ModuleList(MaskedConv1d(channels, channels, kernel, "B") for _ in range(layers - 1))
        self.out = nn.Conv1d(channels, num_embeddings, 1)
        self.position_bias = nn.Parameter(torch.zeros(num_embeddings, length))
        self.register_buffer("level_offset", (torch.arange(length) % num_levels) * num_embeddings)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (B, K, T) for tokens (B, T) of codes in [0, K)."""
        return self.from_embedding(self.embed(tokens + self.level_offset).transpose(1, 2))

    def from_embedding(self, h: torch.Tensor) -> torch.Tensor:
        """Logits (B, K, T) for embedded tokens (B, C, T): the continuous part, where causality is checked."""
        h = self.first(h)
        for block in self.blocks:
            h = h + block(F.relu(h))
        return self.out(F.relu(h)) + self.position_bias


class PixelCNNSampler(Sampler):
    """Autoregressive prior over a quantised model's training code indices; samples quantised codes."""

    def __init__(self, layers: int = 6, channels: int = 64, kernel: int = 7, epochs: int = 10, lr: float = 1e-3,
                 batch_size: int = 128, seed: int = 0):
        for name, value in (("layers", layers), ("channels", channels), ("epochs", epochs),
                            ("batch_size", batch_size)):
            if value < 1:
                raise AebenchError(f"pixelcnn {name} must be >= 1, got {value}")
        if kernel < 1 or kernel % 2 == 0:
            raise AebenchError(f"pixelcnn kernel must be an odd number >= 1, got {kernel}")
        if not lr > 0:
            raise AebenchError(f"pixelcnn lr must be > 0, got {lr}")
        self.layers, self.channels, self.kernel, self.epochs = layers, channels, kernel, epochs
        self.lr, self.batch_size, self.seed = lr, batch_size, seed

    def applies_to(self, model: Any) -> str | None:
        if getattr(model, "quantised", False):
            return None
        name = type(model).__name__
        return f"pixelcnn models discrete code indices; {name} has continuous codes (use vq-vae, hrq-vae)"

    def fit(self, codes: torch.Tensor, model: Any = None) -> PixelCNNSampler:
        """Train on the indices of the training codes, which ``model`` recovers from the code vectors."""
        if model is None or self.applies_to(model) is not None:
            raise AebenchError(self.applies_to(model) if model is not None else "pixelcnn needs the trained model")
        self.model = model
        self.device = next(itertools.chain(model.parameters(), model.buffers())).device

        def batched(fn: Any, t: torch.Tensor) -> torch.Tensor:
            return torch.cat([fn(t[i : i + 4096].to(self.device)).cpu() for i in range(0, len(t), 4096)])

        with torch.no_grad():
            idx = batched(model.code_indices, codes)
            back = batched(model.code_vectors, idx)
        # the share of codes the indices reproduce (1 unless an HRQ code could not be decomposed back)
        self.recovered = float(torch.isclose(back, codes.to(back.dtype), rtol=1e-4, atol=1e-5).all(1).float().mean())
        tokens = idx.flatten(1)  # (N, P * L), position-major: (p0 l0, p0 l1, ..., p1 l0, ...)
        self.length = tokens.shape[1]
        cuda = self.device.type == "cuda"
        devices = [self.device.index if self.device.index is not None else torch.cuda.current_device()] if cuda else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            self.net = PixelCNN1d(model.num_embeddings, model.num_levels, self.length, self.channels, self.layers,
                                  self.kernel).to(self.device)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        g = torch.Generator().manual_seed(self.seed)
        self.net.train()
        with torch.enable_grad():  # the evaluation may fit samplers inside no_grad
            for _ in range(self.epochs):
                perm = torch.randperm(len(tokens), generator=g)
                for i in range(0, len(tokens), self.batch_size):
                    batch = tokens[perm[i : i + self.batch_size]].to(self.device)
                    loss = F.cross_entropy(self.net(batch), batch)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
        self.net.eval()
        with torch.no_grad():  # nats per token on the training indices, for the record
            self.train_nll = float(sum(F.cross_entropy(self.net(t.to(self.device)), t.to(self.device), reduction="sum")
                                       for t in tokens.split(4096)) / tokens.numel())
        return self

    @torch.no_grad()
    def sample_indices(self, n: int, generator: torch.Generator, chunk: int = 2048) -> torch.Tensor:
        """(n, P, L) code indices drawn token by token; the draws use ``generator`` on the CPU."""
        out = []
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            tokens = torch.zeros(m, self.length, dtype=torch.long, device=self.device)
            for t in range(self.length):
                probs = F.softmax(self.net(tokens)[:, :, t].double(), dim=1).cpu()
                tokens[:, t] = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(self.device)
            out.append(tokens.cpu())
        return torch.cat(out).view(n, self.model.n_positions, self.model.num_levels)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        idx = self.sample_indices(n, generator)
        return self.model.code_vectors(idx.to(self.device)).float().cpu()
