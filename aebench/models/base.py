"""The contract every autoencoder meets, and ``build_model`` which makes one from a job's settings.

A model is an ``nn.Module`` with a ``Config`` dataclass of its hyperparameters. It owns its objective
(``loss`` returns named terms, the total under ``"loss"``) and exposes ``encode`` / ``decode`` /
``reconstruct``, so the runner and every metric treat all models alike.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from aebench.config import from_dict
from aebench.errors import AebenchError, SuiteError


@dataclass
class Encoding:
    """What an encoder says about x: the code (posterior mean) and, if stochastic, its log-variance."""

    mean: torch.Tensor
    logvar: torch.Tensor | None = None

    @property
    def std(self) -> torch.Tensor | None:
        return None if self.logvar is None else torch.exp(0.5 * self.logvar)


@dataclass
class ModelConfig:
    """Hyperparameters shared by all models (none); each model subclasses it."""


@dataclass
class TrainSettings:
    """The part of the suite's training budget a model needs to build its optimizers."""

    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = None


class Autoencoder(nn.Module):
    """Base class: a deterministic encoder, a decoder and a decoder likelihood.

    Subclasses set ``Config``, ``probabilistic`` (the encoder outputs a spread) and ``stats_per_dim``
    (encoder outputs per latent dimension), and override ``loss``. A generator without an encoder (a GAN)
    sets ``has_encoder = False``: metrics that need codes or reconstructions are then not applicable.
    ``card`` states the objective exactly (``aebench ls models --details NAME`` prints it): keys
    ``objective``, ``reduction``, ``weights``, ``optimisers``, ``paper``.
    """

    Config: ClassVar[type] = ModelConfig
    probabilistic: ClassVar[bool] = False
    stats_per_dim: ClassVar[int] = 1
    has_encoder: ClassVar[bool] = True
    card: ClassVar[dict[str, str]] = {}

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: Any, latent_dim: int,
                 config: ModelConfig | None = None):
        super().__init__()
        self.encoder, self.decoder, self.likelihood = encoder, decoder, likelihood
        self.latent_dim = int(latent_dim)
        self.config = config if config is not None else self.Config()

    @classmethod
    def backbone_options(cls, config: ModelConfig) -> dict[str, Any]:
        """Backbone settings the model imposes on top of the suite's (the dropout AE's rate, say)."""
        return {}

    # -- the autoencoder interface ------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> Encoding:
        h = self.encoder(x)
        if self.stats_per_dim == 2:
            mean, logvar = h.chunk(2, dim=1)
            return Encoding(mean, logvar)
        return Encoding(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder outputs (logits for Bernoulli, means for Gaussian)."""
        return self.decoder(z)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] for latent codes ``z``."""
        return self.likelihood.mean(self.decode(z))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] decoded from the code of x (the posterior mean for stochastic encoders)."""
        return self.generate(self.encode(x).mean)

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named loss terms averaged over the batch; the total is ``"loss"``."""
        rec = self.likelihood.nll(self.decode(self.encode(x).mean), x).mean()
        return {"loss": rec, "reconstruction": rec}

    # -- training -------------------------------------------------------------------------------------
    def configure_optimizers(self, train: TrainSettings) -> list[torch.optim.Optimizer]:
        return [make_optimizer(self.parameters(), train)]

    def train_step(self, x: torch.Tensor, optimizers: Sequence[torch.optim.Optimizer],
                   grad_clip: float | None = None) -> dict[str, torch.Tensor]:
        """One optimisation step; returns the detached loss terms (no host sync: the runner sums on device)."""
        (opt,) = optimizers
        terms = self.loss(x)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(self.parameters(), grad_clip)
        opt.step()
        return {k: v.detach() for k, v in terms.items()}


def two_player_step(terms: dict[str, torch.Tensor], first: list[nn.Parameter], opt_first: torch.optim.Optimizer,
                    second: list[nn.Parameter], opt_second: torch.optim.Optimizer, grad_clip: float | None,
                    second_key: str = "discriminator") -> dict[str, torch.Tensor]:
    """One step of each player from one forward pass: the first minimises ``terms["loss"]`` over its own
    parameters, then the second ``terms[second_key]`` (computed on the first's detached outputs) over its own."""
    for params, opt, key in ((first, opt_first, "loss"), (second, opt_second, second_key)):
        opt.zero_grad(set_to_none=True)
        terms[key].backward(inputs=params)
        if grad_clip:
            nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
    return {k: v.detach() for k, v in terms.items()}


def make_optimizer(params: Any, train: TrainSettings, **overrides: Any) -> torch.optim.Optimizer:
    """The registered optimizer ``train.optimizer`` (``aebench ls optimizers``; plugins may add their own)."""
    from aebench.registry import OPTIMIZERS

    kwargs = {"lr": train.lr, "weight_decay": train.weight_decay, **overrides}
    cls = OPTIMIZERS.get(train.optimizer)
    if not isinstance(params, torch.Tensor):  # torch refuses a bare tensor itself; groups keep their options
        params = [dict(p, params=list(p["params"])) if isinstance(p, dict) else p for p in params]
    if "fused" not in kwargs and _can_fuse(cls, params):
        kwargs["fused"] = True
    return cls(params, **kwargs)


def _can_fuse(cls: Any, params: Any) -> bool:
    """Whether torch's fused kernel can run ``cls`` (Adam, AdamW, SGD, ...) on these parameters.

    The fused step updates each tensor in one pass instead of ~8 elementwise passes: on a CPU it is 15-20% of a
    small MLP's step (Adam's for-loop over 400k-weight layers). The update rule is the same; results differ only
    in float rounding. Plugin optimizers and parameters on unsupported devices or dtypes keep the default.
    """
    if isinstance(params, torch.Tensor) or not (isinstance(cls, type) and cls.__module__.startswith("torch.optim")):
        return False
    if "fused" not in inspect.signature(cls).parameters:
        return False
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # a torch without the helper: keep the default
        return False
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    return bool(tensors) and all(isinstance(t, torch.Tensor) and t.is_floating_point() and not t.is_sparse
                                 and t.device.type in devices for t in tensors)


# -- configs ----------------------------------------------------------------------------------------
def model_config(name: str, params: dict[str, Any], where: str = "params") -> ModelConfig:
    """The validated config of registered model ``name`` for hyperparameters ``params``."""
    from aebench.registry import MODELS

    return from_dict(MODELS.get(name).Config, params, where)


def build_model(
    name: str,
    image_shape: Sequence[int],
    latent_dim: int,
    params: dict[str, Any] | None = None,
    backbone: str = "mlp",
    backbone_options: dict[str, Any] | None = None,
    likelihood: str = "bernoulli",
    likelihood_options: dict[str, Any] | None = None,
) -> Autoencoder:
    """Make registered model ``name`` on registered backbone ``backbone``; every argument is validated."""
    from aebench.models.likelihood import make_likelihood
    from aebench.registry import BACKBONES, MODELS

    cls = MODELS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Autoencoder)):
        raise AebenchError(f"model {name!r} is not an aebench.models.Autoencoder subclass")
    config = model_config(name, params or {})
    factory = BACKBONES.get(backbone)
    options = {**(backbone_options or {}), **cls.backbone_options(config)}
    accepted = set(inspect.signature(factory).parameters) - {"image_shape", "enc_out", "latent_dim"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise SuiteError(None, f"backbone.{unknown[0]}",
                         f"unknown option of backbone {backbone!r}; allowed: {', '.join(sorted(accepted))}")
    lik = make_likelihood(likelihood, **(likelihood_options or {}))
    own = getattr(cls, "from_shape", None)  # energy models (RBM, Hopfield) make their own weights, no backbone
    if own is not None:
        return own(tuple(image_shape), latent_dim, lik, config)
    encoder, decoder = factory(tuple(image_shape), latent_dim * cls.stats_per_dim, latent_dim, **options)
    return cls(encoder, decoder, lik, latent_dim, config)
