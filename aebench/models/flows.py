"""Normalising flows on latent codes: MADE, autoregressive affine flows (IAF / MAF) and planar / radial flows.

Every flow maps a batch (B, D) to (B, D) and returns the log |det| of its Jacobian per sample, so a density
pushed through it is log q(y) = log q(x) - log|det df/dx|. Autoregressive flows also have an ``inverse``
(D sequential passes); planar and radial flows are used forwards only (Rezende & Mohamed 2015).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from aebench.errors import AebenchError


# -- MADE ---------------------------------------------------------------------------------------------------
class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (the connectivity MADE allows)."""

    def __init__(self, n_in: int, n_out: int, mask: torch.Tensor):
        super().__init__(n_in, n_out)
        self.register_buffer("mask", mask.float(), persistent=False)  # rebuilt from the sizes, not checkpointed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """MADE (Germain et al. 2015): an MLP whose masks make output i depend on inputs 0..i-1 only.

    Sequential degrees (input i has degree i + 1; hidden units cycle through 1..D-1), ReLU hidden layers,
    ``n_params`` outputs per input dimension, returned as a tuple of (B, D) tensors. With D = 1 every output
    is a learned constant.
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (128, 128, 128), n_params: int = 2):
        super().__init__()
        if dim < 1 or any(h < 1 for h in hidden) or n_params < 1:
            raise AebenchError(f"MADE needs dim >= 1, positive hidden widths and n_params >= 1; "
                               f"got dim={dim}, hidden={list(hidden)}, n_params={n_params}")
        self.dim, self.n_params = int(dim), int(n_params)
        degrees = [torch.arange(1, dim + 1)]
        for h in hidden:
            degrees.append(torch.arange(h) % (dim - 1) + 1 if dim > 1 else torch.zeros(h, dtype=torch.long))
        layers: list[nn.Module] = []
        for d_in, d_out in zip(degrees[:-1], degrees[1:]):
            layers += [MaskedLinear(len(d_in), len(d_out), d_out[:, None] >= d_in[None, :]), nn.ReLU()]
        out_degrees = degrees[0].repeat(n_params)
        layers.append(MaskedLinear(len(degrees[-1]), dim * n_params, out_degrees[:, None] > degrees[-1][None, :]))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.net(x).chunk(self.n_params, dim=-1)


# -- autoregressive affine flows ---------------------------------------------------------------------------
class AutoregressiveAffine(nn.Module):
    """y_i = x_i * scale_i(x_<i) + shift_i(x_<i), one MADE giving (s, m); log|det| = sum_i log scale_i.

    ``gated=False``: scale = exp(s), shift = m (pythae's IAF / MAF step). ``gated=True``: Kingma et al.'s
    numerically stable IAF step, scale = sigmoid(s + forget_bias), shift = (1 - scale) * m.
    The forward pass is one MADE pass; the inverse takes D passes (coordinate i is exact after i + 1).
    """

    def __init__(self, dim: int, hidden: Sequence[int], gated: bool = False, forget_bias: float = 1.0):
        super().__init__()
        self.made = MADE(dim, hidden, n_params=2)
        self.gated, self.forget_bias = bool(gated), float(forget_bias)

    def scale_shift(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log scale and shift at x, each (B, D); entry i depends on x_<i only."""
        s, m = self.made(x)
        if not self.gated:
            return s, m
        log_scale = F.logsigmoid(s + self.forget_bias)
        return log_scale, (1 - log_scale.exp()) * m

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_scale, shift = self.scale_shift(x)
        return x * log_scale.exp() + shift, log_scale.sum(-1)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x with forward(x) = y, and log|det dx/dy| (= -log|det dy/dx|)."""
        x = torch.zeros_like(y)
        for _ in range(self.made.dim):
            log_scale, shift = self.scale_shift(x)
            x = (y - shift) * (-log_scale).exp()
        return x, -log_scale.sum(-1)


class AutoregressiveFlow(nn.Module):
    """A stack of ``n_blocks`` autoregressive affine steps, the order of the dimensions reversed between steps.

    Used as an IAF (forward = noise -> sample, parallel; Kingma et al. 2016) or as a MAF (forward = data ->
    noise, parallel; Papamakarios et al. 2017); pythae's defaults are 2 blocks of 3 hidden layers of 128.
    """

    def __init__(self, dim: int, n_blocks: int = 2, n_hidden: int = 3, hidden_size: int = 128,
                 gated: bool = False):
        super().__init__()
        if n_blocks < 1 or n_hidden < 0 or hidden_size < 1:
            raise AebenchError(f"an autoregressive flow needs n_made_blocks >= 1, n_hidden_in_made >= 0 and "
                               f"hidden_size >= 1; got {n_blocks}, {n_hidden}, {hidden_size}")
        self.blocks = nn.ModuleList(AutoregressiveAffine(dim, [hidden_size] * n_hidden, gated)
                                    for _ in range(n_blocks))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = x.new_zeros(x.shape[0])
        for i, block in enumerate(self.blocks):
            if i:
                x = x.flip(-1)
            x, log_det = block(x)
            total = total + log_det
        return x, total

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = y.new_zeros(y.shape[0])
        for i in reversed(range(len(self.blocks))):
            y, log_det = self.blocks[i].inverse(y)
            total = total + log_det
            if i:
                y = y.flip(-1)
        return y, total


# -- planar and radial flows -------------------------------------------------------------------------------
class Planar(nn.Module):
    """f(z) = z + u_hat tanh(w.z + b) (Rezende & Mohamed 2015), log|det| = log|1 + u_hat . tanh'(w.z + b) w|.

    u_hat = u + (softplus(w.u) - 1 - w.u) w / |w|^2 keeps w.u_hat > -1, so f is invertible (their appendix A).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.w, self.u, self.b = (nn.Parameter(torch.randn(n)) for n in (dim, dim, 1))  # pythae's N(0, 1) init

    def u_hat(self) -> torch.Tensor:
        wu = self.w @ self.u
        return self.u + (F.softplus(wu) - 1 - wu) * self.w / self.w.pow(2).sum()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = self.u_hat()
        h = torch.tanh(z @ self.w + self.b)  # (B,)
        log_det = torch.log(torch.abs(1 + (1 - h.pow(2)) * (self.w @ u)))
        return z + h[:, None] * u, log_det


class Radial(nn.Module):
    """f(z) = z + beta h(r) (z - z0), h = 1 / (alpha + r), r = |z - z0| (Rezende & Mohamed 2015).

    alpha = exp(log_alpha) > 0 and beta = -alpha + softplus(beta_raw) >= -alpha keep f invertible;
    log|det| = (D - 1) log(1 + beta h) + log(1 + beta h - beta r / (alpha + r)^2).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.z0 = nn.Parameter(torch.randn(dim))
        self.log_alpha, self.beta_raw = nn.Parameter(torch.randn(1)), nn.Parameter(torch.randn(1))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = self.log_alpha.exp()
        beta = -alpha + F.softplus(self.beta_raw)
        diff = z - self.z0
        r = diff.norm(dim=-1, keepdim=True)
        h = 1 / (alpha + r)
        log_det = (z.shape[-1] - 1) * torch.log1p(beta * h) + torch.log1p(beta * h - beta * r / (alpha + r) ** 2)
        return z + beta * h * diff, log_det.squeeze(-1)


LINEAR_FLOWS = {"planar": Planar, "radial": Radial}


class FlowSequence(nn.Module):
    """Planar / radial flows applied in order, named as in ``LINEAR_FLOWS``; log-dets add up."""

    def __init__(self, dim: int, names: Sequence[str]):
        super().__init__()
        unknown = [n for n in names if n not in LINEAR_FLOWS]
        if unknown:
            raise AebenchError(f"unknown flow {unknown[0]!r}; allowed: {', '.join(LINEAR_FLOWS)}")
        self.flows = nn.ModuleList(LINEAR_FLOWS[n](dim) for n in names)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = z.new_zeros(z.shape[0])
        for flow in self.flows:
            z, log_det = flow(z)
            total = total + log_det
        return z, total

