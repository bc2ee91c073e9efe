"""The regularized autoencoder (Ghosh et al. 2020): a deterministic AE with a small code norm and a
smooth decoder, which generates through a density fitted to its codes after training (``gmm`` sampler)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from aebench.errors import AebenchError
from aebench.models.base import Autoencoder, ModelConfig, TrainSettings, make_optimizer
from aebench.models.jacobian import hutchinson_frobenius, jacobian_frobenius


@dataclass
class RAEConfig(ModelConfig):
    beta: float = 1.0  # weight of ||z||^2 / 2
    regularizer: Literal["l2", "gp"] = "l2"  # decoder weight decay (RAE-L2) or gradient penalty (RAE-GP)
    lam: float = 1e-3  # weight of the decoder regularizer

    def __post_init__(self) -> None:
        if self.beta < 0 or self.lam < 0:
            raise AebenchError(f"beta and lam must be >= 0, got beta={self.beta}, lam={self.lam}")
        if self.regularizer not in ("l2", "gp"):
            raise AebenchError(f"unknown regularizer {self.regularizer!r}; allowed: 'l2', 'gp'")


class RAE(Autoencoder):
    """RAE: reconstruction plus beta * ||z||^2 / 2 plus decoder weight decay (l2) or a decoder gradient penalty (gp).

    l2: the decoder's parameters get weight decay lam in their own optimizer group, i.e. the gradient of
    lam/2 * ||theta_dec||^2 with Adam; that value is reported as ``decoder_l2`` and included in ``loss``.
    gp: lam * ||d D(z) / dz||_F^2, estimated without bias with one random probe per sample.
    """

    Config = RAEConfig
    card = {
        "objective": "-log p(x | Dec(z)) + beta * ||z||^2 / 2 + the decoder regularizer, z = Enc(x) deterministic; "
                     "l2: weight decay lam on every decoder parameter in the optimiser (its own parameter group, "
                     "weight_decay = train.weight_decay + lam: the gradient of lam/2 ||theta_dec||^2 with adam, sgd, "
                     "rmsprop; decoupled decay with adamw), reported as decoder_l2 = lam/2 ||theta_dec||^2 and added "
                     "to 'loss' without a gradient; gp: lam * ||d Dec(z) / dz||_F^2 of the decoder's outputs (logits "
                     "for bernoulli), Hutchinson's one-probe ||J^T v||^2, v ~ N(0, I)",
        "reduction": "-log p summed over pixels (nats per image), ||z||^2 over latent dimensions, the gradient "
                     "penalty over the Jacobian's entries; each averaged over the batch; decoder_l2 once per step",
        "weights": "beta = 1 (the ||z||^2 / 2 weight), regularizer = l2, lam = 1e-3 (the decoder regularizer's)",
        "optimisers": "one: train.optimizer (lr, weight_decay) over encoder and decoder; with l2 the decoder's "
                      "parameters form a second group with weight_decay + lam",
        "paper": "Ghosh, Sajjadi, Vergari, Black & Schoelkopf 2020, From Variational to Deterministic "
                 "Autoencoders (ICLR)",
    }

    def _decoder_l2(self) -> torch.Tensor:
        with torch.no_grad():
            return 0.5 * self.config.lam * sum(p.pow(2).sum() for p in self.decoder.parameters())

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encode(x).mean
        out = self.decode(z)
        rec = self.likelihood.nll(out, x).mean()
        latent = 0.5 * z.pow(2).sum(1).mean()
        terms = {"reconstruction": rec, "latent_norm": latent}
        total = rec + self.config.beta * latent
        if self.config.regularizer == "gp":
            create = torch.is_grad_enabled()  # training: reuse the reconstruction's decoder pass when it can
            with torch.enable_grad():
                norm = jacobian_frobenius if getattr(self.config, "estimator", "") == "exact" else hutchinson_frobenius
                gp = norm(self.decoder, z, create_graph=create, out=out if create else None).mean()
            terms["gradient_penalty"] = gp if create else gp.detach()
            total = total + self.config.lam * terms["gradient_penalty"]
        else:
            terms["decoder_l2"] = self._decoder_l2()
            total = total + terms["decoder_l2"]
        return {"loss": total, **terms}

    def configure_optimizers(self, train: TrainSettings) -> list[torch.optim.Optimizer]:
        if self.config.regularizer != "l2":
            return super().configure_optimizers(train)
        dec = {id(p) for p in self.decoder.parameters()}
        groups = [
            {"params": [p for p in self.parameters() if id(p) not in dec]},
            {"params": list(self.decoder.parameters()), "weight_decay": train.weight_decay + self.config.lam},
        ]
        return [make_optimizer(groups, train)]
