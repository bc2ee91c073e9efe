"""The built-in entries of every registry, as lazy ``"module:attr"`` strings.

Keeping them here (and not in decorators spread over heavy modules) lets ``aebench ls`` and suite
validation of names run without importing torch. Each section belongs to one subpackage.
"""

from __future__ import annotations

from aebench.registry import BACKBONES, DATASETS, LAUNCHERS, METRICS, MODELS, SAMPLERS

# -- models (aebench/models) ----------------------------------------------------------------------
_MODELS = [
    ("ae", "aebench.models.ae:AE", "plain autoencoder: reconstruction loss only"),
    ("vae", "aebench.models.vae:VAE", "variational AE: Gaussian encoder, reparameterisation, analytic KL"),
]
for _name, _target, _desc in _MODELS:
    MODELS.register(_name, target=_target, description=_desc)

# -- backbones (aebench/models/backbones.py) ------------------------------------------------------
BACKBONES.register("mlp", target="aebench.models.backbones:mlp", description="fully connected encoder/decoder")

# -- samplers (aebench/models/samplers.py) --------------------------------------------------------
SAMPLERS.register("prior", target="aebench.models.samplers:PriorSampler", description="the prior N(0, I)")
SAMPLERS.register(
    "gaussian", target="aebench.models.samplers:GaussianSampler",
    description="a full-covariance Gaussian fitted to the training codes",
)

# -- datasets (aebench/data) ----------------------------------------------------------------------
_DATASETS = [
    ("mnist", "aebench.data.torchvision_sets:mnist", "MNIST digits, 28x28 grayscale, 10 classes"),
    ("fashion-mnist", "aebench.data.torchvision_sets:fashion_mnist", "Fashion-MNIST, 28x28 grayscale"),
    ("kmnist", "aebench.data.torchvision_sets:kmnist", "Kuzushiji-MNIST, 28x28 grayscale"),
    ("cifar10", "aebench.data.torchvision_sets:cifar10", "CIFAR-10, 32x32 colour, 10 classes"),
    ("celeba", "aebench.data.torchvision_sets:celeba", "CelebA faces, centre-cropped and resized to 64x64"),
    ("encoder", "aebench.data.synthetic:encoder_task", "the N-M-N encoder task: one-hot patterns"),
    ("synthetic", "aebench.data.synthetic:synthetic", "small generated bar images with labels, for tests"),
]
for _name, _target, _desc in _DATASETS:
    DATASETS.register(_name, target=_target, description=_desc)

# -- metrics (aebench/metrics) --------------------------------------------------------------------
# meta: direction ('min' or 'max': which way is better), directions (per-key overrides, None = neither),
# needs (labels, probabilistic, samples), headline (the keys reports show first).
METRICS.register(
    "recon", target="aebench.metrics.reconstruction:reconstruction",
    description="test reconstruction error: MSE per pixel and BCE per image (nats)",
    direction="min", needs=(), headline=("mse",),
)

# -- launchers (aebench/launchers) ----------------------------------------------------------------
LAUNCHERS.register("local", target="aebench.launchers.local:LocalLauncher",
                   description="run the jobs one after another in this process")
