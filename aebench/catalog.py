"""The built-in entries of every registry, as lazy ``"module:attr"`` strings.

Keeping them here (and not in decorators spread over heavy modules) lets ``aebench ls`` and suite
validation of names run without importing torch. Each section belongs to one subpackage.
"""

from __future__ import annotations

from aebench.registry import BACKBONES, DATASETS, LAUNCHERS, METRICS, MODELS, SAMPLERS

# -- models (aebench/models) ----------------------------------------------------------------------
_MODELS = [
    ("ae", "aebench.models.ae:AE", "plain autoencoder: reconstruction loss only"),
    ("dropout-ae", "aebench.models.ae:DropoutAE", "dropout AE: dropout at the hidden layers, rate configurable"),
    ("sparse-ae", "aebench.models.ae:SparseAE", "sparse AE: L1 penalty lam * sum |h_i| on the code activations"),
    ("contractive-ae", "aebench.models.contractive:ContractiveAE",
     "contractive AE: lam * ||J_f(x)||_F^2, the encoder's exact squared Jacobian norm"),
    ("denoising-ae", "aebench.models.denoising:DenoisingAE",
     "denoising AE: recovers x from a gaussian, masked or salt-and-pepper copy"),
    ("vae", "aebench.models.vae:VAE", "variational AE: Gaussian encoder, reparameterisation, analytic KL"),
    ("beta-vae", "aebench.models.vae:BetaVAE", "beta-VAE: the VAE with weight beta (default 4) on the KL"),
    ("iwae", "aebench.models.iwae:IWAE", "importance-weighted AE: the k-sample bound on log p(x)"),
    ("wae-mmd", "aebench.models.wae:WAEMMD", "Wasserstein AE: IMQ-kernel MMD between codes and N(0, I)"),
    ("wae-gan", "aebench.models.wae:WAEGAN", "Wasserstein AE: latent discriminator trained against N(0, I)"),
    ("rae", "aebench.models.rae:RAE", "regularized AE: ||z||^2 plus decoder weight decay or gradient penalty"),
]
for _name, _target, _desc in _MODELS:
    MODELS.register(_name, target=_target, description=_desc)

# -- backbones (aebench/models/backbones.py) ------------------------------------------------------
BACKBONES.register("mlp", target="aebench.models.backbones:mlp",
                   description="fully connected encoder/decoder; widths, activation, sigmoid codes")
BACKBONES.register("conv", target="aebench.models.backbones:conv",
                   description="4-conv batch-norm pair of RAE/WAE/pythae; fits 28x28, 32x32, 64x64 images")

# -- samplers (aebench/models/samplers.py) --------------------------------------------------------
SAMPLERS.register("prior", target="aebench.models.samplers:PriorSampler", description="the prior N(0, I)")
SAMPLERS.register(
    "gaussian", target="aebench.models.samplers:GaussianSampler",
    description="a full-covariance Gaussian fitted to the training codes",
)
SAMPLERS.register(
    "gmm", target="aebench.models.samplers:GMMSampler",
    description="a 10-component full-covariance Gaussian mixture fitted to the training codes",
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
_UNLABELLED = {"celeba"}  # meta labels=False: validation refuses metrics that need labels on these
for _name, _target, _desc in _DATASETS:
    DATASETS.register(_name, target=_target, description=_desc, labels=_name not in _UNLABELLED)

# -- metrics (aebench/metrics) --------------------------------------------------------------------
# meta: direction ('min' or 'max': which way is better), directions (per-key overrides, None = neither),
# needs (labels, probabilistic, samples), headline (the keys reports show first).
METRICS.register(
    "recon", target="aebench.metrics.reconstruction:reconstruction",
    description="test reconstruction error: MSE per pixel and BCE per image (nats)",
    direction="min", needs=(), headline=("mse",),
)
# Keys named per sampler (fid/<sampler>, sharpness/ratio_<sampler>, ...): directions may be fnmatch patterns;
# aebench.registry.metric_direction resolves a column's direction.
METRICS.register(
    "fid", target="aebench.metrics.fidelity:fid",
    description="FID, KID, precision/recall (torch-fidelity) of samples per sampler and of reconstructions vs test",
    direction="min", needs=(), headline=("gaussian", "prior", "recon"),
    directions={"precision_*": "max", "recall_*": "max"},
)
METRICS.register(
    "active_units", "au", target="aebench.metrics.latent:active_units",
    description="active latent dimensions (Burda et al. 2016): Cov_x(E_q[z]) > threshold, count and variances",
    direction=None, needs=(), headline=("count",),
)
METRICS.register(
    "codes", target="aebench.metrics.latent:codes",
    description="the test codes themselves (first max_items, with labels): the encoder task's learned codes",
    direction=None, needs=(), headline=(),
)
METRICS.register(
    "kl_w2", target="aebench.metrics.latent:kl_w2",
    description="Gaussian fit of the test aggregate posterior vs N(0, I): KL and W2; mean per-sample KL",
    direction="min", needs=(), headline=("kl", "w2"),
)
METRICS.register(
    "sharpness", "blur", target="aebench.metrics.sharpness:sharpness",
    description="sharpness (WAE paper): variance of the 3x3 Laplace response, samples and recons, ratio to data",
    direction="max", needs=(), headline=("ratio_gaussian", "ratio_prior", "ratio_recon"),
    directions={"data": None},
)
METRICS.register(
    "probe", target="aebench.metrics.latent:probe",
    description="linear probe: logistic-regression test accuracy on the training codes",
    direction="max", needs=("labels",), headline=("accuracy",), directions={"chance": None},
)
METRICS.register(
    "nll", target="aebench.metrics.likelihood:nll",
    description="importance-sampled test NLL (nats per image), k samples per image",
    direction="min", needs=("probabilistic", "log_likelihood"), headline=("nats",),
    directions={"gap": None},
)
METRICS.register(
    "cost", target="aebench.metrics.cost:cost",
    description="parameters, training seconds, seconds per epoch (the runner adds evaluation seconds)",
    direction="min", needs=(), headline=("params", "train_seconds"),
)

# -- launchers (aebench/launchers) ----------------------------------------------------------------
LAUNCHERS.register("local", target="aebench.launchers.local:LocalLauncher",
                   description="run the jobs one after another in this process")
LAUNCHERS.register("local-parallel", target="aebench.launchers.parallel:ParallelLauncher",
                   description="worker processes on this machine: one per GPU, or N CPU workers (workers: N)")
LAUNCHERS.register("slurm", target="aebench.launchers.slurm:SlurmLauncher", detach=True,
                   description="submit the jobs to Slurm as one job array via submitit (pip install 'aebench[slurm]')")
