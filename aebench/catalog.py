"""The built-in entries of every registry, as lazy ``"module:attr"`` strings.

Keeping them here (and not in decorators spread over heavy modules) lets ``aebench ls`` and suite
validation of names run without importing torch. Each section belongs to one subpackage.
"""

from __future__ import annotations

from aebench.registry import (
    BACKBONES,
    DATASETS,
    EXTRACTORS,
    LAUNCHERS,
    LIKELIHOODS,
    METRICS,
    MODELS,
    OPTIMIZERS,
    SAMPLERS,
)

# -- models (aebench/models) ----------------------------------------------------------------------
_MODELS = [
    ("ae", "aebench.models.ae:AE", "plain autoencoder: reconstruction loss only"),
    ("dropout-ae", "aebench.models.ae:DropoutAE", "dropout AE: dropout at the hidden layers, rate configurable"),
    ("sparse-ae", "aebench.models.ae:SparseAE", "sparse AE: L1 penalty lam * sum |h_i| on the code activations"),
    ("contractive-ae", "aebench.models.contractive:ContractiveAE",
     "contractive AE: lam * ||J_f(x)||_F^2, the encoder's squared Jacobian norm (exact, or Hutchinson's estimate)"),
    ("denoising-ae", "aebench.models.denoising:DenoisingAE",
     "denoising AE: recovers x from a gaussian, masked or salt-and-pepper copy"),
    ("vae", "aebench.models.vae:VAE", "variational AE: Gaussian encoder, reparameterisation, analytic KL"),
    ("beta-vae", "aebench.models.vae:BetaVAE", "beta-VAE: the VAE with weight beta (default 4) on the KL"),
    ("iwae", "aebench.models.iwae:IWAE", "importance-weighted AE: the k-sample bound on log p(x)"),
    ("miwae", "aebench.models.iwae_family:MIWAE", "MIWAE(M, K): the mean of M independent K-sample IWAE bounds"),
    ("piwae", "aebench.models.iwae_family:PIWAE",
     "PIWAE: encoder on MIWAE(M, K), decoder on IWAE(M*K), two optimisers on the same draws"),
    ("ciwae", "aebench.models.iwae_family:CIWAE", "CIWAE: beta * ELBO + (1 - beta) * IWAE bound on the same K draws"),
    ("disentangled-beta-vae", "aebench.models.disentangle:DisentangledBetaVAE",
     "beta-VAE with capacity: beta * |KL - C|, C grown linearly to c_max over warmup_steps"),
    ("factor-vae", "aebench.models.disentangle:FactorVAE",
     "FactorVAE: VAE + gamma * TC, the TC from a discriminator on (z, dimension-permuted z)"),
    ("beta-tc-vae", "aebench.models.disentangle:BetaTCVAE",
     "beta-TCVAE: KL split into MI, TC and dimension-wise KL (MWS or MSS estimates), weighted apart"),
    ("msssim-vae", "aebench.models.msssim:MSSSIMVAE", "VAE with 1 - MS-SSIM as its reconstruction term"),
    ("info-vae", "aebench.models.vae_variants:InfoVAE",
     "InfoVAE-MMD: rec + (1 - alpha) KL + (alpha + lambda - 1) MMD(q(z), N(0, I)), rbf or imq kernel"),
    ("cv-vae", "aebench.models.vae_variants:CVVAE",
     "constant-variance VAE: encoder std fixed (0.7), only the mean learned"),
    ("two-stage-vae", "aebench.models.vae_variants:TwoStageVAE",
     "two-stage VAE, stage one: learned decoder variance gamma (gaussian); sample with the two-stage sampler"),
    ("wae-mmd", "aebench.models.wae:WAEMMD", "Wasserstein AE: IMQ-kernel MMD between codes and N(0, I)"),
    ("wae-gan", "aebench.models.wae:WAEGAN", "Wasserstein AE: latent discriminator trained against N(0, I)"),
    ("rae", "aebench.models.rae:RAE", "regularized AE: ||z||^2 plus decoder weight decay or gradient penalty"),
    ("vamp", "aebench.models.vamp:VampVAE", "VampPrior VAE: prior = mean of q(z|u_k) over K learned pseudo-inputs"),
    ("vae-iaf", "aebench.models.vae_flows:VAEIAF", "VAE with an inverse autoregressive flow (MADE blocks) posterior"),
    ("vae-linnf", "aebench.models.vae_flows:VAELinNF", "VAE with planar / radial normalising flows on the posterior"),
    ("vq-vae", "aebench.models.vq:VQVAE", "VQ-VAE: nearest-code quantisation, straight-through, commitment, EMA"),
    ("hrq-vae", "aebench.models.vq:HRQVAE", "HRQ-VAE: hierarchical residual quantisation, Gumbel-softmax"),
    ("hvae", "aebench.models.hamiltonian:HVAE", "Hamiltonian VAE: tempered leapfrog on -log p(x, z) refines q(z|x)"),
    ("rhvae", "aebench.models.hamiltonian:RHVAE", "Riemannian HVAE: generalised leapfrog under a learned metric G(z)"),
    ("aae", "aebench.models.adversarial:AAE", "adversarial AE: latent discriminator against N(0, I), Gaussian encoder"),
    ("vae-gan", "aebench.models.adversarial:VAEGAN",
     "VAE-GAN: reconstruction in an image discriminator's features; encoder, decoder, discriminator"),
    ("rae-gp", "aebench.models.rae_variants:RAEGP", "RAE-GP: ||z||^2 plus the decoder's squared Jacobian norm"),
    ("rae-sn", "aebench.models.rae_variants:RAESN", "RAE-SN: ||z||^2, spectrally normalised decoder layers"),
    ("dcgan", "aebench.models.gan:DCGAN", "DCGAN: the decoder as generator against an image discriminator; no encoder"),
    ("svae", "aebench.models.svae:SVAE", "hyperspherical VAE: von Mises-Fisher posterior, uniform prior on S^{d-1}"),
    ("poincare-vae", "aebench.models.poincare:PoincareVAE",
     "Poincaré VAE: wrapped normal posterior and prior on the Poincaré ball, MC KL"),
    ("rbm", "aebench.models.rbm:RBM", "restricted Boltzmann machine: binary units, PCD training, log p(x) by AIS"),
    ("hopfield", "aebench.models.hopfield:Hopfield",
     "Hopfield network: Hebbian, centred or projection storage of n_stored binarised images, asynchronous "
     "recall; no gradient training"),
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
    version=2,  # 2: EM in torch on the job's device (1: scikit-learn's GaussianMixture)
)
SAMPLERS.register("vamp-prior", target="aebench.models.flow_samplers:VampPriorSampler",
                  description="a vamp model's VampPrior: a pseudo-input u_k uniformly, then z ~ q(z | u_k)")
SAMPLERS.register("maf", target="aebench.models.flow_samplers:MAFSampler",
                  description="a masked autoregressive flow (2 MADE blocks of 3x128) fitted to the training codes")
SAMPLERS.register("iaf", target="aebench.models.flow_samplers:IAFSampler",
                  description="an inverse autoregressive flow (2 MADE blocks of 3x128) fitted to the training codes")
SAMPLERS.register("pixelcnn", target="aebench.models.pixelcnn:PixelCNNSampler",
                  description="a masked-convolution PixelCNN over a quantised model's code indices (vq-vae, hrq-vae)")
SAMPLERS.register("rhvae", target="aebench.models.rhvae_sampler:RHVAESampler",
                  description="an rhvae model's HMC on its metric's volume element sqrt(det G^-1(z))")
SAMPLERS.register("hypersphere", target="aebench.models.sphere_samplers:HypersphereSampler",
                  description="uniform on the hypersphere S^{d-1}: the svae prior")
SAMPLERS.register("poincare", target="aebench.models.sphere_samplers:PoincareSampler",
                  description="the wrapped normal prior on the Poincaré ball: the poincare-vae prior")
SAMPLERS.register("gibbs", target="aebench.models.rbm:GibbsSampler",
                  description="an rbm's block-Gibbs chains from random visible states (steps, default 1000)")
SAMPLERS.register("two-stage", target="aebench.models.two_stage_sampler:TwoStageSampler",
                  description="Dai & Wipf's second-stage VAE (3-layer MLPs, learned gamma) fitted to the codes")

# -- datasets (aebench/data) ----------------------------------------------------------------------
_DATASETS = [
    ("mnist", "aebench.data.torchvision_sets:mnist", "MNIST digits, 28x28 grayscale, 10 classes"),
    ("fashion-mnist", "aebench.data.torchvision_sets:fashion_mnist", "Fashion-MNIST, 28x28 grayscale"),
    ("kmnist", "aebench.data.torchvision_sets:kmnist", "Kuzushiji-MNIST, 28x28 grayscale"),
    ("cifar10", "aebench.data.torchvision_sets:cifar10", "CIFAR-10, 32x32 colour, 10 classes"),
    ("celeba", "aebench.data.torchvision_sets:celeba", "CelebA faces, centre-cropped and resized to 64x64"),
    ("encoder", "aebench.data.synthetic:encoder_task", "the N-M-N encoder task: one-hot patterns"),
    ("synthetic", "aebench.data.synthetic:synthetic", "small generated bar images with labels, for tests"),
    ("random-patterns", "aebench.data.random_patterns:random_patterns",
     "uniform random binary images (size x size, on with probability p): associative-memory capacity tests"),
]
_UNLABELLED = {"celeba", "random-patterns"}  # meta labels=False: validation refuses metrics that need labels on these
# meta val: images held out of the training split when a suite's data.val is unset (the last ones; RAE's MNIST
# protocol keeps 50,000 for training and 10,000 for validation)
_VAL = {"mnist": 10_000, "fashion-mnist": 10_000, "kmnist": 10_000, "cifar10": 5_000, "celeba": 10_000}
for _name, _target, _desc in _DATASETS:
    DATASETS.register(_name, target=_target, description=_desc, labels=_name not in _UNLABELLED,
                      val=_VAL.get(_name, 0))

# -- metrics (aebench/metrics) --------------------------------------------------------------------
# meta: direction ('min' or 'max': which way is better), directions (per-key overrides, None = neither),
# needs (labels, probabilistic, ...), headline (the keys reports show first), uses ("samples" if its values depend
# on the samplers and n_samples; plugins that do not say are assumed to), settings (a dataclass of its settings;
# default: the function's typed keyword arguments), depends ("module:fn", settings -> what else it depends on),
# version (bump when the metric's computation changes: its records are then recomputed). What reports show of it
# (aebench/report/keys.py): figures ("module:fn", each fn(res, out) -> Figure | None), columns (key patterns of the
# comparison table; default headline), rank_by / rank_priority (default leaderboard keys), section (own table).
METRICS.register(
    "recon", target="aebench.metrics.reconstruction:reconstruction",
    description="test reconstruction error: MSE per pixel and BCE per image (nats)",
    direction="min", needs=("encoder",), headline=("mse",), uses=(), rank_by=("mse",), rank_priority=2,
)
# Keys named per sampler (fid/<sampler>, sharpness/ratio_<sampler>, ...): directions may be fnmatch patterns;
# aebench.registry.metric_direction resolves a column's direction.
METRICS.register(
    "fid", target="aebench.metrics.fidelity:fid",
    description="FID, KID, precision/recall (torch-fidelity) of samples per sampler and of reconstructions vs test",
    direction="min", needs=(), headline=("gaussian", "prior", "recon"), uses=("samples",),
    settings="aebench.metrics.fidelity:FIDSettings", depends="aebench.metrics.fidelity:fid_depends",
    directions={"precision_*": "max", "recall_*": "max"},
    figures=("aebench.report.metric_figures:tradeoff",), rank_by=("gaussian", "prior"), rank_priority=1,
)
METRICS.register(
    "active_units", "au", target="aebench.metrics.latent:active_units",
    description="active latent dimensions (Burda et al. 2016): Cov_x(E_q[z]) > threshold, count and variances",
    direction=None, needs=("encoder",), headline=("count",), uses=(),
    figures=("aebench.report.metric_figures:active_units",),
)
METRICS.register(
    "codes", target="aebench.metrics.latent:codes",
    description="the test codes themselves (first max_items, with labels): the encoder task's learned codes",
    direction=None, needs=("encoder",), headline=(), uses=(), figures=("aebench.report.metric_figures:codes",),
)
METRICS.register(
    "kl_w2", target="aebench.metrics.latent:kl_w2",
    description="Gaussian fit of the test aggregate posterior vs N(0, I): KL and W2; mean per-sample KL",
    direction="min", needs=("encoder",), headline=("kl", "w2"), uses=(),
    figures=("aebench.report.metric_figures:kl_w2",),
)
METRICS.register(
    "sharpness", "blur", target="aebench.metrics.sharpness:sharpness",
    description="sharpness (WAE paper): variance of the 3x3 Laplace response, samples and recons, ratio to data",
    direction="max", needs=(), headline=("ratio_gaussian", "ratio_prior", "ratio_recon"), uses=("samples",),
    directions={"data": None}, figures=("aebench.report.metric_figures:sharpness",),
)
METRICS.register(
    "probe", target="aebench.metrics.latent:probe",
    description="linear probe: logistic-regression test accuracy on the training codes",
    direction="max", needs=("encoder", "labels"), headline=("accuracy",), directions={"chance": None}, uses=(),
)
METRICS.register(
    "nll", target="aebench.metrics.likelihood:nll",
    description="importance-sampled test NLL (nats per image), k samples per image",
    direction="min", needs=("encoder", "probabilistic", "log_likelihood"), headline=("nats",), uses=(),
    directions={"gap": None},
)
METRICS.register(
    "cost", target="aebench.metrics.cost:cost",
    description="parameters, training seconds, seconds per epoch (the runner adds evaluation seconds)",
    direction="min", needs=(), headline=("params", "train_seconds"), uses=(), section="cost",
)
METRICS.register(
    "codebook", target="aebench.metrics.codebook:codebook",
    description="codebook usage of quantised models on the test set: perplexity exp(H), used and dead codes",
    direction="max", needs=(), headline=("perplexity", "dead_fraction"), uses=(),
    directions={"dead": "min", "dead_fraction": "min", "codes": None},
)
# issue 15: paired scores, FID_inf, density/coverage, memorisation, completion, fine-tuning, interpolation FID
_FID_DEPENDS = "aebench.metrics.fidelity:fid_depends"  # the extractor's weights, by hash
METRICS.register(
    "paired", target="aebench.metrics.paired:paired", settings="aebench.metrics.paired:PairedSettings",
    description="PSNR (mean of per-image dB; reconstructions quantised to uint8 as saved) and SSIM (11x11 "
    "Gaussian window, sigma 1.5) of test reconstructions",
    direction="max", needs=("encoder",), headline=("psnr", "ssim"), uses=(),
)
METRICS.register(
    "fid_inf", target="aebench.metrics.fid_inf:fid_inf", settings="aebench.metrics.fid_inf:FIDInfSettings",
    description="FID_inf (Chong & Forsyth 2020): FID at several sample counts regressed on 1/N, extrapolated to "
    "1/N = 0; KID at each count", depends=_FID_DEPENDS,
    direction="min", needs=(), headline=("gaussian", "prior"), uses=("samples",),
)
METRICS.register(
    "prdc", target="aebench.metrics.prdc:prdc", settings="aebench.metrics.prdc:PRDCSettings",
    description="density and coverage (Naeem et al. 2020, k=5) of samples and reconstructions in fid's features",
    direction="max", needs=(), headline=("coverage_gaussian", "coverage_prior"), uses=("samples",),
    depends=_FID_DEPENDS,
)
METRICS.register(
    "memorisation", target="aebench.metrics.memorisation:memorisation", depends=_FID_DEPENDS,
    settings="aebench.metrics.memorisation:MemorisationSettings",
    description="training-set copying: share of samples nearer the training set than test images' 5% quantile, "
    "and Meehan et al.'s C_T (Mann-Whitney z, negative = copying)",
    direction="min", needs=(), headline=("ct_gaussian", "copied_gaussian"), uses=("samples",),
    directions={"ct_*": None}, figures=("aebench.report.image_figures:memorisation",),
)
METRICS.register(
    "completion", target="aebench.metrics.completion:completion",
    settings="aebench.metrics.completion:CompletionSettings",
    description="MSE on hidden pixels completing test images (bottom half masked; salt and pepper): one "
    "reconstruction pass and iterated passes with the known pixels clamped",
    direction="min", needs=("encoder",), headline=("masked_mse_iterated", "sp_mse_onepass"), uses=(),
    directions={"masked_mse_input": None, "sp_mse_input": None},
    figures=("aebench.report.image_figures:completion",),
)
METRICS.register(
    "finetune", target="aebench.metrics.finetune:finetune", settings="aebench.metrics.finetune:FinetuneSettings",
    description="test accuracy of the encoder plus a linear head fine-tuned on 100 / 1,000 balanced labels, "
    "from the trained encoder vs a random initialisation",
    direction="max", needs=("encoder", "labels"), headline=("gain_100", "acc_pretrained_100"), uses=(),
    figures=("aebench.report.metric_figures:finetune",),
)
METRICS.register(
    "interp_fid", target="aebench.metrics.interp:interp_fid", settings="aebench.metrics.interp:InterpSettings",
    description="FID of images decoded from mid-points of random pairs of test codes (RAE paper's Interp.)",
    direction="min", needs=("encoder",), headline=("fid",), uses=(), depends=_FID_DEPENDS,
)
METRICS.register(
    "retrieval", target="aebench.metrics.retrieval:retrieval", settings="aebench.metrics.retrieval:RetrievalSettings",
    description="associative recall of k stored (hopfield) or training images from corrupted copies (flip or "
    "mask): fraction recovered within a Hamming tolerance, mean overlap; with ks, the capacity curve",
    direction="max", needs=("encoder",), headline=("recovered", "overlap"), uses=(),
    figures=("aebench.report.memory:capacity_figure",),
)

# -- likelihoods and optimizers (aebench/models) --------------------------------------------------------------
LIKELIHOODS.register("bernoulli", target="aebench.models.likelihood:Bernoulli",
                     description="pixels as Bernoulli probabilities; decoder outputs logits; BCE summed per image")
LIKELIHOODS.register("gaussian", target="aebench.models.likelihood:Gaussian",
                     description="pixels as Gaussians of fixed sigma; scaled squared error plus constant, per image")
for _name, _target in (("adam", "torch.optim:Adam"), ("adamw", "torch.optim:AdamW"), ("sgd", "torch.optim:SGD"),
                       ("rmsprop", "torch.optim:RMSprop")):
    OPTIMIZERS.register(_name, target=_target, description=f"{_target.split(':')[1]} (torch.optim), lr and "
                        "weight_decay from the suite's train section")

# -- FID feature extractors (aebench/metrics/fidelity.py) ---------------------------------------------------------
EXTRACTORS.register("digits", target="aebench.metrics.fidelity:digits_extractor",
                    description="aebench's MNIST CNN (99.38% test accuracy), shipped; for 28x28 grayscale images")
EXTRACTORS.register("inception", target="aebench.metrics.fidelity:inception_extractor",
                    description="torch-fidelity's Inception-v3 (2048 features); weights from "
                    "feature_extractor_weights_path or the cache")
for _size, _alias in (("s", ()), ("b", ()), ("l", ("dinov2",)), ("g", ())):  # dinov2 = ViT-L/14: FD_DINOv2
    EXTRACTORS.register(f"dinov2-vit-{_size}-14", *_alias, target=f"aebench.metrics.extractors:dinov2_vit{_size}14",
                        description=f"torch-fidelity's DINOv2 ViT-{_size.upper()}/14 (CLS features); weights "
                        "downloaded into the cache, model code via torch.hub")

# -- launchers (aebench/launchers) ----------------------------------------------------------------
LAUNCHERS.register("local", target="aebench.launchers.local:LocalLauncher",
                   description="run the jobs one after another in this process")
LAUNCHERS.register("local-parallel", target="aebench.launchers.parallel:ParallelLauncher",
                   description="worker processes on this machine: one per GPU, or N CPU workers (workers: N)")
LAUNCHERS.register("slurm", target="aebench.launchers.slurm:SlurmLauncher", detach=True,
                   description="submit the jobs to Slurm as one job array via submitit (pip install 'aebench[slurm]')")
