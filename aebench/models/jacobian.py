"""Per-sample Jacobian norms of encoders and decoders, batched (the contractive AE and the RAE's gradient penalty).

A network with batch norm in training mode couples the samples of a batch through the batch statistics,
so the Jacobian of the batched map is not block-diagonal. The penalties want each sample's own Jacobian
at the current operating point, so the Jacobian pass normalises with the batch's statistics held
constant (``frozen_batch_stats``); the map is then sample-independent and one batched vector-Jacobian
product per output dimension gives every sample's Jacobian exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def _training_batch_norms(module: nn.Module) -> list[_BatchNorm]:
    return [m for m in module.modules() if isinstance(m, _BatchNorm) and m.training]


def couples_samples(module: nn.Module) -> bool:
    """True when the module's output for one sample depends on the others (batch norm in training mode)."""
    return bool(_training_batch_norms(module))


@contextmanager
def frozen_batch_stats(module: nn.Module) -> Iterator[None]:
    """Batch-norm layers normalise with the batch's mean and variance as constants, and leave running stats alone.

    The forward values equal training mode's; only the derivative through the statistics is dropped.
    """
    patched = _training_batch_norms(module)

    def frozen(bn: _BatchNorm):
        def forward(inp: torch.Tensor) -> torch.Tensor:
            dims = [0, *range(2, inp.dim())]
            mean = inp.detach().mean(dims)
            var = inp.detach().var(dims, unbiased=False)
            return F.batch_norm(inp, mean, var, bn.weight, bn.bias, False, 0.0, bn.eps)

        return forward

    for bn in patched:
        bn.forward = frozen(bn)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for bn in patched:
            del bn.forward


def jacobian_frobenius(fn: nn.Module, x: torch.Tensor, create_graph: bool = True,
                       out: torch.Tensor | None = None) -> torch.Tensor:
    """||d fn(x_b) / d x_b||_F^2 for every sample b, shaped (B,), exact.

    One batched reverse-mode pass over the d output dimensions (``is_grads_batched`` vmaps the
    vector-Jacobian product over the basis vectors), no Python loop over dimensions. ``out`` may pass
    ``fn(x)`` when ``x`` already requires grad and ``fn`` is sample-independent, saving a forward pass.
    """
    if out is None or couples_samples(fn) or not x.requires_grad:
        x = x.detach().requires_grad_(True)
        with frozen_batch_stats(fn):
            out = fn(x)
    flat = out.flatten(1)
    b, d = flat.shape
    basis = torch.eye(d, device=flat.device, dtype=flat.dtype).unsqueeze(1).expand(d, b, d)
    (grads,) = torch.autograd.grad(flat, x, basis, is_grads_batched=True, create_graph=create_graph)
    return grads.pow(2).flatten(2).sum(2).sum(0)


def hutchinson_frobenius(fn: nn.Module, z: torch.Tensor, create_graph: bool = True,
                         out: torch.Tensor | None = None) -> torch.Tensor:
    """An unbiased one-probe estimate of ||d fn(z_b) / d z_b||_F^2 per sample: ||J^T v||^2, v ~ N(0, I).

    One vector-Jacobian product instead of one per output dimension: for large outputs (a decoder's
    image), or where the exact norm costs too much. ``out`` as in ``jacobian_frobenius``.
    """
    if out is None or couples_samples(fn) or not z.requires_grad:
        z = z.detach().requires_grad_(True) if not z.requires_grad else z
        with frozen_batch_stats(fn):
            out = fn(z)
    v = torch.randn_like(out)
    (g,) = torch.autograd.grad(out, z, v, create_graph=create_graph)
    return g.pow(2).flatten(1).sum(1)


def single_sigmoid_layer(encoder: nn.Module) -> nn.Linear | None:
    """The linear map of an encoder that is exactly ``sigmoid(W x + b)`` (flattening aside), else None."""
    if not isinstance(encoder, nn.Sequential):
        return None
    layers = [m for m in encoder if not isinstance(m, (nn.Flatten, nn.Identity))]
    if len(layers) == 2 and isinstance(layers[0], nn.Linear) and isinstance(layers[1], nn.Sigmoid):
        return layers[0]
    return None


def sigmoid_layer_frobenius(linear: nn.Linear, h: torch.Tensor) -> torch.Tensor:
    """Closed form for h = sigmoid(W x + b): ||J||_F^2 = sum_j (h_j (1 - h_j))^2 sum_i W_ji^2, per sample."""
    return (h * (1 - h)).pow(2) @ linear.weight.pow(2).sum(1)
