"""The denoising autoencoder (Vincent et al. 2008): reconstruct the clean image from a corrupted copy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from aebench.errors import AebenchError
from aebench.models.base import Autoencoder, ModelConfig

NOISES = ("gaussian", "masking", "salt_pepper")


def corrupt(x: torch.Tensor, noise: str, level: float) -> torch.Tensor:
    """A corrupted copy of x (images in [0, 1]).

    gaussian: x + level * N(0, 1) per pixel (not clipped, so the noise is exactly Gaussian);
    masking: each pixel set to 0 with probability level;
    salt_pepper: each pixel, with probability level, set to 0 or 1 with equal chance.
    """
    if noise == "gaussian":
        return x + level * torch.randn_like(x)
    u = torch.rand_like(x)
    if noise == "masking":
        return torch.where(u < level, torch.zeros_like(x), x)
    if noise == "salt_pepper":
        # one uniform draw decides both: u < level/2 is pepper (0), level/2 <= u < level is salt (1)
        return torch.where(u < level, (u >= level / 2).to(x.dtype), x)
    raise AebenchError(f"unknown noise {noise!r}; allowed: {', '.join(NOISES)}")


@dataclass
class DenoisingAEConfig(ModelConfig):
    noise: Literal["gaussian", "masking", "salt_pepper"] = "masking"
    level: float = 0.25  # std of the Gaussian noise, or the fraction of pixels masked / salted (Vincent et al.: 25%)

    def __post_init__(self) -> None:
        if self.noise not in NOISES:
            raise AebenchError(f"unknown noise {self.noise!r}; allowed: {', '.join(NOISES)}")
        if self.level < 0 or (self.noise != "gaussian" and self.level > 1):
            raise AebenchError(f"level must be in [0, 1] for {self.noise} noise (>= 0 for gaussian), got {self.level}")


class DenoisingAE(Autoencoder):
    """Denoising AE: encodes a corrupted copy of x (gaussian, masking or salt-and-pepper) and reconstructs clean x."""

    Config = DenoisingAEConfig
    card = {
        "objective": "-log p(x | Dec(Enc(x~))), x~ a fresh corrupted copy of the clean target x: masking sets each "
                     "pixel to 0 with probability level; gaussian adds level * N(0, 1) per pixel (not clipped); "
                     "salt_pepper sets each pixel, with probability level, to 0 or 1 with equal chance",
        "reduction": "-log p summed over pixels (nats per image), mean over the batch",
        "weights": "noise = masking, level = 0.25 (Vincent et al.'s 25% masking; the std for gaussian noise)",
        "optimisers": "one: train.optimizer (lr, weight_decay) over encoder and decoder",
        "paper": "Vincent, Larochelle, Bengio & Manzagol 2008, Extracting and Composing Robust Features with "
                 "Denoising Autoencoders (ICML)",
    }

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        noisy = corrupt(x, self.config.noise, self.config.level)
        rec = self.likelihood.nll(self.decode(self.encode(noisy).mean), x).mean()
        return {"loss": rec, "reconstruction": rec}
