"""The contractive autoencoder (Rifai et al. 2011): penalise the encoder's sensitivity to its input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from aebench.errors import AebenchError
from aebench.models.base import Autoencoder, ModelConfig
from aebench.models.jacobian import (
    hutchinson_frobenius,
    jacobian_frobenius,
    sigmoid_layer_frobenius,
    single_sigmoid_layer,
)


@dataclass
class ContractiveAEConfig(ModelConfig):
    lam: float = 1.0  # weight of ||J_f(x)||_F^2, per image next to a reconstruction term in nats
    fast_path: bool = True  # use the closed form when the encoder is one sigmoid layer
    # exact: one batched backward pass per code dimension (about 10x an AE step for an MLP on MNIST);
    # hutchinson: an unbiased one-probe estimate, for tight CPU budgets
    estimator: Literal["exact", "hutchinson"] = "exact"

    def __post_init__(self) -> None:
        if self.lam < 0:
            raise AebenchError(f"lam must be >= 0, got {self.lam}")
        if self.estimator not in ("exact", "hutchinson"):
            raise AebenchError(f"unknown estimator {self.estimator!r}; allowed: 'exact', 'hutchinson'")


def contractive_penalty(encoder: torch.nn.Module, x: torch.Tensor, fast_path: bool = True,
                        estimator: str = "exact") -> tuple[torch.Tensor, torch.Tensor]:
    """(code, ||J_f(x_b)||_F^2 per sample): closed form for one sigmoid layer, else batched autograd
    (exact, or Hutchinson's unbiased estimate).

    Differentiable when grad mode is on (the model trains through it); detached otherwise.
    """
    linear = single_sigmoid_layer(encoder) if fast_path else None
    if linear is not None:
        h = encoder(x)
        return h, sigmoid_layer_frobenius(linear, h)
    create = torch.is_grad_enabled()
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        h = encoder(xr)
        norm = jacobian_frobenius if estimator == "exact" else hutchinson_frobenius
        penalty = norm(encoder, xr, create_graph=create, out=h)
    return (h, penalty) if create else (h.detach(), penalty.detach())


class ContractiveAE(Autoencoder):
    """Contractive AE: reconstruction plus lam * ||J_f(x)||_F^2, the encoder's squared Jacobian norm."""

    Config = ContractiveAEConfig
    card = {
        "objective": "-log p(x | Dec(h)) + lam * ||J_f(x)||_F^2, h = f(x) = Enc(x), J_f = dh/dx the encoder's "
                     "Jacobian: closed form sum_j (h_j (1 - h_j))^2 sum_i W_ji^2 when the encoder is one sigmoid "
                     "layer (fast_path), else exact (one batched backward pass per code dimension) or Hutchinson's "
                     "one-probe ||J^T v||^2, v ~ N(0, I) (estimator); batch-norm statistics held constant in J",
        "reduction": "-log p summed over pixels (nats per image), ||J||_F^2 summed over code dimensions x pixels; "
                     "both averaged over the batch",
        "weights": "lam = 1, estimator = exact, fast_path = true",
        "optimisers": "one: train.optimizer (lr, weight_decay) over encoder and decoder (the exact and Hutchinson "
                      "penalties back-propagate by a double backward pass)",
        "paper": "Rifai, Vincent, Muller, Glorot & Bengio 2011, Contractive Auto-Encoders: Explicit Invariance "
                 "During Feature Extraction (ICML)",
    }

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h, penalty = contractive_penalty(self.encoder, x, self.config.fast_path, self.config.estimator)
        rec = self.likelihood.nll(self.decode(h), x).mean()
        contractive = penalty.mean()
        return {"loss": rec + self.config.lam * contractive, "reconstruction": rec, "contractive": contractive}
