"""Issue 15's metrics against independent references: scikit-image and torchmetrics (PSNR, SSIM), the closed-form
Frechet distance of two Gaussians (FID_inf), the prdc package (density, coverage), scipy's Mann-Whitney U
(memorisation), hand computations (completion), torch-fidelity (interpolation FID); and the extractor
weights download (file:// URLs, checksums, the offline error)."""

from __future__ import annotations

import hashlib
import math
import urllib.error

import numpy as np
import pytest
import torch
from test_fid import digit_like
from torch import nn

from aebench.data.base import ImageSet
from aebench.errors import AebenchError
from aebench.metrics import extractors
from aebench.metrics.base import EvalContext, evaluate, to_uint8
from aebench.models.base import Autoencoder, Encoding
from aebench.models.likelihood import Bernoulli


class SmallAE(Autoencoder):
    def __init__(self, shape=(1, 28, 28), d=4, seed=0):
        torch.manual_seed(seed)
        D = int(np.prod(shape))
        super().__init__(nn.Sequential(nn.Flatten(), nn.Linear(D, d)),
                         nn.Sequential(nn.Linear(d, D), nn.Unflatten(1, shape)), Bernoulli(), d)


def make_ctx(model, test, train=None, labels_test=None, labels_train=None, **kw) -> EvalContext:
    train = test if train is None else train
    kw.setdefault("samplers", ())
    return EvalContext(model=model, train=ImageSet("toy", "train", train, labels_train),
                       test=ImageSet("toy", "test", test, labels_test), device=torch.device("cpu"), **kw)


# -- paired: PSNR and SSIM ------------------------------------------------------------------------------------------
def test_psnr_and_ssim_equal_scikit_image_and_torchmetrics():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    from aebench.metrics.paired import psnr, ssim

    for shape in ((1, 28, 28), (3, 16, 13)):
        g = torch.Generator().manual_seed(shape[0])
        x = torch.randint(0, 256, (4, *shape), generator=g, dtype=torch.uint8)
        y = (x.float() + 40 * torch.randn(x.shape, generator=g)).clamp(0, 255).round().to(torch.uint8)
        a, b = x.numpy().transpose(0, 2, 3, 1), y.numpy().transpose(0, 2, 3, 1)
        ref_p = [peak_signal_noise_ratio(a[i], b[i], data_range=255) for i in range(4)]
        ref_s = [structural_similarity(a[i], b[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                       data_range=255, channel_axis=-1) for i in range(4)]
        assert np.allclose(psnr(x, y).numpy(), ref_p, rtol=1e-12)
        assert np.allclose(ssim(x, y).numpy(), ref_s, rtol=1e-9, atol=1e-12)
        # torchmetrics averages its map over the whole (reflect-padded) image; its interior is the same SSIM
        _, tm_map = tm_ssim(y.double(), x.double(), data_range=255.0, reduction="none", return_full_image=True)
        assert np.allclose(ssim(x, y).numpy(), tm_map[..., 5:-5, 5:-5].mean((1, 2, 3)).numpy(), rtol=1e-9)


def test_paired_metric_scores_the_saved_reconstructions():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    x = digit_like(30, 1)
    ctx = make_ctx(SmallAE(), x)
    out = evaluate(ctx, [("paired", {"max_images": 20})])["values"]
    r = ctx.reconstructions("test").numpy()[:20, 0]
    ref_p = np.mean([peak_signal_noise_ratio(x[i, 0].numpy(), r[i], data_range=255) for i in range(20)])
    ref_s = np.mean([structural_similarity(x[i, 0].numpy(), r[i], gaussian_weights=True, sigma=1.5,
                                           use_sample_covariance=False, data_range=255) for i in range(20)])
    assert out["paired/psnr"] == pytest.approx(ref_p, rel=1e-10)
    assert out["paired/ssim"] == pytest.approx(ref_s, rel=1e-8)


# -- FID_inf --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fid_inf_extrapolation_beats_every_finite_n_on_known_gaussians(seed):
    from aebench.metrics.fid_inf import extrapolate, fid_curve
    from aebench.metrics.latent import w2_gaussians

    d = 32
    var = torch.linspace(0.5, 2.0, d, dtype=torch.float64)
    gen = (var.sqrt() * torch.randn(2000, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    real_stats = {"mu": np.zeros(d, dtype=np.float32), "sigma": np.eye(d)}  # the exact N(0, I)
    zero, eye = torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)
    exact = w2_gaussians(zero, torch.diag(var), zero, eye) ** 2  # the closed-form Frechet distance
    curve = fid_curve(gen.float(), None, real_stats, [250, 500, 1000, 2000])
    fids = {n: r["fid"] for n, r in curve.items()}
    fid_inf, slope = extrapolate(fids)
    assert slope > 0  # FID_N is biased upwards, by ~ slope / N
    assert abs(fid_inf - exact) < min(abs(f - exact) for f in fids.values())
    assert abs(fid_inf - exact) < 0.1 * exact


def test_fid_inf_metric_keys_and_its_largest_size_is_fid(tmp_path):
    from aebench.metrics import fidelity

    ctx = make_ctx(SmallAE(), digit_like(200, 2), digit_like(200, 3), samplers=("prior",), n_samples=200,
                   cache_dir=tmp_path)
    out = evaluate(ctx, [("fid_inf", {"sizes": [50, 100, 200], "kid_subsets": 5, "kid_subset_size": 50}),
                         ("fid", {"kid": False, "prc": False, "recon": False})])
    v = out["values"]
    assert {"fid_inf/prior", "fid_inf/kid_prior_n50", "fid_inf/kid_prior_n200"} <= set(v)
    curve = out["details"]["fid_inf/curve_prior"]["fid_n"]
    assert curve["200"] == pytest.approx(v["fid/prior"], rel=1e-6)  # all 200 samples: fid's own number
    assert curve["50"] > curve["200"] > v["fid_inf/prior"]  # the bias falls with N, the intercept is below
    assert fidelity.resolve_extractor("dinov2", (3, 32, 32)) == "dinov2-vit-l-14"


# -- density and coverage -----------------------------------------------------------------------------------------
def test_density_coverage_equal_the_prdc_package():
    from prdc import compute_prdc

    from aebench.metrics.fidelity import knn_radii
    from aebench.metrics.prdc import density_coverage

    g = torch.Generator().manual_seed(4)
    real, fake = torch.randn(300, 8, generator=g), 0.8 * torch.randn(250, 8, generator=g) + 0.3
    ref = compute_prdc(real.numpy(), fake.numpy(), nearest_k=5)
    dens, cov = density_coverage(real, fake, knn_radii(real, 5), 5, batch=100)
    assert dens == pytest.approx(ref["density"], abs=1e-9) and cov == pytest.approx(ref["coverage"], abs=1e-9)


def test_prdc_metric_on_the_shared_features(tmp_path):
    from prdc import compute_prdc

    from aebench.metrics.extractors import context_extractor, image_features, sample_features
    from aebench.metrics.fidelity import reference

    ctx = make_ctx(SmallAE(), digit_like(150, 5), samplers=("prior",), n_samples=150, cache_dir=tmp_path)
    v = evaluate(ctx, [("prdc", {"k": 3})])["values"]
    ext = context_extractor(ctx)
    real = reference(ctx, ext, 150)[0].numpy()
    for source, feats in (("prior", sample_features(ctx, ext, "prior", 150)),
                          ("recon", image_features(ctx, ext, "recon", ctx.reconstructions("test")))):
        ref = compute_prdc(real, feats.numpy(), nearest_k=3)
        assert v[f"prdc/density_{source}"] == pytest.approx(ref["density"], abs=1e-6)
        assert v[f"prdc/coverage_{source}"] == pytest.approx(ref["coverage"], abs=1e-6)


# -- memorisation ---------------------------------------------------------------------------------------------------
def test_mann_whitney_u_equals_scipy_with_ties():
    from scipy.stats import mannwhitneyu

    from aebench.metrics.memorisation import mann_whitney_u, z_u

    rng = np.random.default_rng(6)
    x, y = rng.integers(0, 20, 70).astype(float), rng.integers(3, 25, 90).astype(float)
    assert mann_whitney_u(x, y) == mannwhitneyu(x, y).statistic
    assert z_u(x, y) == pytest.approx((mannwhitneyu(x, y).statistic - 70 * 90 / 2) / math.sqrt(70 * 90 * 161 / 12))


class BankAE(SmallAE):
    """A 'generator' whose samples are images of a bank: z's first coordinate (N(0, 1) under the prior) picks one."""

    def __init__(self, bank: torch.Tensor):
        super().__init__()
        self.bank = bank

    def generate(self, z):
        u = 0.5 * (1 + torch.erf(z[:, 0] / math.sqrt(2)))
        return self.bank[(u * len(self.bank)).long().clamp(max=len(self.bank) - 1)].float() / 255


def test_memorisation_flags_a_model_that_returns_training_images(tmp_path):
    train, test, fresh = digit_like(400, 7), digit_like(300, 8), digit_like(400, 9)
    settings = {"cells": 3, "min_cell_samples": 10, "quantile": 0.05}
    out = {}
    for name, bank in (("copier", train), ("fresh", fresh)):
        ctx = make_ctx(BankAE(bank), test, train, samplers=("prior",), n_samples=300, cache_dir=tmp_path)
        out[name] = evaluate(ctx, [("memorisation", settings)])["values"]
    assert out["copier"]["memorisation/copied_prior"] == 1.0
    assert out["copier"]["memorisation/ct_prior"] < -5
    assert out["fresh"]["memorisation/copied_prior"] < 0.15
    assert abs(out["fresh"]["memorisation/ct_prior"]) < 2.5


# -- completion -----------------------------------------------------------------------------------------------------
class IdentityAE(SmallAE):
    def reconstruct(self, x):
        return x


class OracleAE(SmallAE):
    """Knows the clean images: returns the one that agrees with the input on the most pixel values."""

    def __init__(self, clean: torch.Tensor):
        super().__init__()
        self.clean = clean.float() / 255

    def reconstruct(self, x):
        agree = ((x[:, None] - self.clean[None]).abs() < 1e-6).flatten(2).sum(2)
        return self.clean[agree.argmax(1)]


def test_completion_identity_keeps_the_corruption_error_and_an_oracle_scores_zero():
    x = digit_like(40, 10)
    settings = {"steps": 3, "sp_level": 0.3, "mask_fill": 0.25}
    ident = evaluate(make_ctx(IdentityAE(), x, batch_size=64), [("completion", settings)])["values"]
    xf = x.double().numpy() / 255
    masked_ref = np.mean((0.25 - xf[:, :, 14:]) ** 2)  # the hidden bottom half against the fill value
    u = torch.rand(x.shape, generator=make_ctx(IdentityAE(), x).generator("completion/salt_pepper")).double().numpy()
    hit = u < 0.3
    sp_ref = np.mean(((u >= 0.15).astype(float) - xf)[hit] ** 2)  # salt (1) or pepper (0) against the truth
    for kind in ("input", "onepass", "iterated"):
        assert ident[f"completion/masked_mse_{kind}"] == pytest.approx(masked_ref, rel=1e-6)
        assert ident[f"completion/sp_mse_{kind}"] == pytest.approx(sp_ref, rel=1e-6)
    oracle = evaluate(make_ctx(OracleAE(x), x, batch_size=64), [("completion", settings)])["values"]
    for key in ("masked_mse_onepass", "masked_mse_iterated", "sp_mse_onepass", "sp_mse_iterated"):
        assert oracle[f"completion/{key}"] == 0.0
    one = evaluate(make_ctx(SmallAE(), x), [("completion", {"steps": 1})])["values"]
    assert one["completion/masked_mse_iterated"] == pytest.approx(one["completion/masked_mse_onepass"])


# -- fine-tuning ----------------------------------------------------------------------------------------------------
D, C = 64, 4
CLASS_DIRS = torch.linalg.qr(torch.randn(D, C, generator=torch.Generator().manual_seed(0)))[0].T


def class_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % C
    x = 0.5 + 0.15 * torch.randn(n, D, generator=g) + 0.4 * CLASS_DIRS[y]
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).view(n, 1, 8, 8), y


def test_finetune_from_codes_that_separate_the_classes_beats_random_init():
    from aebench.metrics.finetune import balanced_subset

    model = SmallAE((1, 8, 8), C, seed=1)
    with torch.no_grad():  # 'pretrained': code c reads the class-c direction
        model.encoder[1].weight.copy_(10 * CLASS_DIRS)
        model.encoder[1].bias.copy_(-5 * CLASS_DIRS.sum(1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    (xtr, ytr), (xte, yte) = class_images(400, 1), class_images(600, 2)
    ctx = make_ctx(model, xte, xtr, yte, ytr)
    v = evaluate(ctx, [("finetune", {"label_counts": [20, 40], "epochs": 10, "lr": 1e-2, "batch_size": 10})])
    v = v["values"]
    for n in (20, 40):
        assert v[f"finetune/acc_pretrained_{n}"] > v[f"finetune/acc_random_{n}"] + 0.15
        assert v[f"finetune/gain_{n}"] == pytest.approx(v[f"finetune/acc_pretrained_{n}"]
                                                        - v[f"finetune/acc_random_{n}"])
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in before)  # the evaluated model is untouched
    idx = balanced_subset(ytr, 10, torch.Generator().manual_seed(0))
    assert torch.bincount(ytr[idx]).tolist() == [3, 3, 2, 2]


def test_finetune_does_not_apply_to_an_encoder_without_trainable_parameters():
    model = SmallAE((1, 8, 8), C, seed=1)
    for p in model.encoder.parameters():  # a fixed encoder (a Hopfield net's memory has only buffers)
        p.requires_grad_(False)
    (xtr, ytr), (xte, yte) = class_images(40, 1), class_images(40, 2)
    out = evaluate(make_ctx(model, xte, xtr, yte, ytr), [("finetune", {"label_counts": [20], "epochs": 1})])
    assert "no trainable parameters" in out["not_applicable"]["finetune"]
    assert not any(k.startswith("finetune/") for k in out["values"])


# -- interpolation FID ----------------------------------------------------------------------------------------------
class PixelAE(Autoencoder):
    """Codes are the pixels themselves, so a decoded mid-point is the average of two images."""

    def __init__(self):
        super().__init__(nn.Flatten(), nn.Unflatten(1, (1, 28, 28)), Bernoulli(), 784)

    def encode(self, x):
        return Encoding(x.flatten(1))

    def generate(self, z):
        return z.view(-1, 1, 28, 28).clamp(0, 1)


def test_interp_fid_equals_torch_fidelity_on_the_averaged_images(tmp_path):
    import torch_fidelity

    from aebench.metrics.extractors import context_extractor

    x = digit_like(120, 11)
    ctx = make_ctx(PixelAE(), x, cache_dir=tmp_path)
    v = evaluate(ctx, [("interp_fid", {"n": 100})])["values"]
    g = ctx.generator("interp_fid/pairs")  # the documented draws: a, and b = a + 1..n-1 (mod n)
    a = torch.randint(120, (100,), generator=g)
    b = (a + torch.randint(1, 120, (100,), generator=g)) % 120
    mid = to_uint8(0.5 * (x[a].float() / 255 + x[b].float() / 255))

    class U8(torch.utils.data.Dataset):
        def __init__(self, t):
            self.t = t

        def __len__(self):
            return len(self.t)

        def __getitem__(self, i):
            return self.t[i]

    ref = torch_fidelity.calculate_metrics(input1=U8(mid), input2=U8(x[:100]), fid=True, cuda=False, cache=False,
                                           verbose=False, save_cpu_ram=True,
                                           feature_extractor=context_extractor(ctx).name)
    assert v["interp_fid/fid"] == pytest.approx(ref["frechet_inception_distance"], rel=1e-4)


# -- extractor weights: download, checksum, offline -----------------------------------------------------------------
def fake_weights(tmp_path, name="fake-weights.pth"):
    src = tmp_path / "src" / name
    src.parent.mkdir()
    torch.save(nn.Linear(3, 2).state_dict(), src)
    return src, hashlib.sha256(src.read_bytes()).hexdigest()


def test_download_lands_in_the_cache_checked_and_a_wrong_checksum_is_refused(tmp_path, monkeypatch):
    src, digest = fake_weights(tmp_path)
    folder = tmp_path / "cache" / "extractors"
    spec = extractors.WeightsFile("w.pth", src.as_uri(), sha256=digest)
    path = extractors.fetch_weights(spec, folder)
    assert path == folder / "w.pth" and path.read_bytes() == src.read_bytes()

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(extractors.urllib.request, "urlopen", offline)
    assert extractors.fetch_weights(spec, folder) == path  # cached: no download
    monkeypatch.undo()
    with pytest.raises(AebenchError, match="refused the download .* expected sha256 0000"):
        extractors.fetch_weights(extractors.WeightsFile("x.pth", src.as_uri(), sha256="0" * 64), folder)
    assert sorted(p.name for p in folder.iterdir()) == ["w.pth"]  # nothing of the refused file is left
    assert extractors.fetch_weights(extractors.WeightsFile("p.pth", src.as_uri(), hash_prefix=digest[:8]), folder)
    with pytest.raises(AebenchError, match="starting 6726825d"):
        extractors.fetch_weights(extractors.WeightsFile("q.pth", src.as_uri(), hash_prefix="6726825d"), folder)
    path.write_bytes(b"damaged")
    with pytest.raises(AebenchError, match="does not have sha256"):
        extractors.fetch_weights(spec, folder)


def test_offline_inception_names_the_file_to_place(tmp_path, monkeypatch):
    from aebench.metrics import fidelity

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(extractors.urllib.request, "urlopen", offline)
    monkeypatch.setenv("AEBENCH_CACHE", str(tmp_path))
    with pytest.raises(AebenchError) as err:
        fidelity.Extractor("inception", torch.device("cpu"))
    msg = str(err.value)
    assert "\n" not in msg and "feature_extractor_weights_path" in msg
    assert str(tmp_path / "extractors" / "weights-inception-2015-12-05-6726825d.pth") in msg


def test_dinov2_extractor_builds_from_the_downloaded_weights(tmp_path, monkeypatch):
    from aebench.metrics import fidelity

    tiny = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, 5))
    src = tmp_path / "dino.pth"
    torch.save(tiny.state_dict(), src)
    spec = extractors.WeightsFile("dino.pth", src.as_uri(), sha256=hashlib.sha256(src.read_bytes()).hexdigest())
    monkeypatch.setitem(extractors.DINOV2_FILES, "dinov2-vit-s-14", spec)
    monkeypatch.setattr(extractors, "_hub_model",
                        lambda name: nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, 5)))
    monkeypatch.setenv("AEBENCH_CACHE", str(tmp_path / "cache"))
    ext = fidelity.Extractor("dinov2-vit-s-14", torch.device("cpu"))
    assert (tmp_path / "cache" / "extractors" / "dino.pth").is_file()
    assert ext.weights_hash == spec.sha256
    assert torch.equal(ext.module.model[2].weight, tiny[2].weight)  # the downloaded weights, not a fresh init
    assert ext.features(digit_like(3, 12)).shape == (3, 5)  # grayscale repeated to the 3 channels it takes


def test_new_metric_directions():
    from aebench.registry import metric_direction

    assert metric_direction("paired/ssim") == "max" and metric_direction("fid_inf/kid_prior_n5000") == "min"
    assert metric_direction("prdc/coverage_gmm") == "max" and metric_direction("memorisation/ct_prior") is None
    assert metric_direction("memorisation/copied_prior") == "min"
    assert metric_direction("completion/sp_mse_input") is None and metric_direction("finetune/gain_100") == "max"
    assert metric_direction("interp_fid/fid") == "min"
