"""Score a model saved by pythae (``model.save(dir)`` or a training pipeline's ``final_model``) with aebench.

``AutoModel.load_from_folder`` loads it; its encoder (``embedding``, and ``log_covariance`` for variational
models) and decoder (``reconstruction``, images in [0, 1]) are wrapped as an ``Autoencoder``, so every aebench
metric that applies scores it. Needs the optional extra: ``pip install "aebench[pythae]"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from aebench.errors import AebenchError
from aebench.models.base import Autoencoder, Encoding

EPS = 1e-6


def check_folder(folder: str | Path) -> Path:
    """Refuse, in one line, a folder that is not one pythae saved."""
    p = Path(folder)
    if not p.is_dir():
        raise AebenchError(f"--pythae {folder}: no such folder")
    for name in ("model_config.json", "model.pt"):
        if not (p / name).is_file():
            raise AebenchError(f"--pythae {folder}: not a folder saved by pythae (no {name}); pass the folder that "
                               "holds model_config.json and model.pt (a training run's final_model)")
    return p


class PythaeModel(Autoencoder):
    """A pythae model behind aebench's interface: ``encode`` gives its embedding (and log-variance),
    ``generate`` its decoder's images; ``decode`` returns logits for a Bernoulli likelihood, so NLL-type terms
    are on aebench's scale."""

    def __init__(self, model: Any, likelihood: Any):
        super().__init__(model.encoder, model.decoder, likelihood, int(model.model_config.latent_dim))
        self.pythae_name = type(model).__name__
        self._probabilistic: bool | None = None

    @property
    def probabilistic(self) -> bool:  # type: ignore[override]
        return bool(self._probabilistic)

    def encode(self, x: torch.Tensor) -> Encoding:
        out = self.encoder(x)
        if "embedding" not in out:
            raise AebenchError(f"pythae {self.pythae_name}: its encoder returns no 'embedding'")
        logvar = out["log_covariance"] if "log_covariance" in out else None
        self._probabilistic = logvar is not None
        return Encoding(out["embedding"], logvar)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)["reconstruction"].clamp(0.0, 1.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        images = self.decoder(z)["reconstruction"]
        if getattr(self.likelihood, "name", "") == "bernoulli":
            return torch.logit(images.clamp(EPS, 1 - EPS))
        return images


def load_pythae(folder: str | Path, likelihood: str = "bernoulli",
                likelihood_options: dict | None = None) -> PythaeModel:
    """The model pythae saved in ``folder``, wrapped; one-line errors for a wrong folder or a missing pythae."""
    folder = check_folder(folder)
    try:
        from pythae.models import AutoModel
    except ImportError:
        raise AebenchError('--pythae needs pythae: pip install "aebench[pythae]"') from None
    from aebench.models.likelihood import make_likelihood

    try:
        model = AutoModel.load_from_folder(str(folder))
    except Exception as e:  # noqa: BLE001 - pythae raises assorted errors for a foreign folder
        first = str(e).splitlines()[0] if str(e) else ""
        raise AebenchError(f"--pythae {folder}: pythae cannot load it ({e.__class__.__name__}: {first[:200]})") \
            from None
    wrapped = PythaeModel(model, make_likelihood(likelihood, **(likelihood_options or {})))
    wrapped.eval()
    with torch.no_grad():  # find out once whether the encoder is variational
        shape = tuple(model.model_config.input_dim)
        wrapped.encode(torch.zeros(1, *shape))
    return wrapped
