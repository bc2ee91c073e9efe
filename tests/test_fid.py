"""FID/KID/precision-recall: aebench's numbers equal a direct torch-fidelity call, the test set against itself
scores 0, reference statistics are cached, the digits extractor is pinned and accurate, Inception fails clearly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aebench.data.base import ImageSet
from aebench.errors import AebenchError
from aebench.metrics import fidelity
from aebench.metrics.base import EvalContext
from aebench.metrics.digits_extractor import ASSET, ASSET_SHA256, extractor_meta, file_sha256, load_digits_cnn
from aebench.models.base import Autoencoder
from aebench.models.likelihood import Bernoulli


def digit_like(n: int, seed: int) -> torch.Tensor:
    """28x28 uint8 images of random strokes (smooth blobs), cheap stand-ins for digits."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 7, 7, generator=g).pow(3)
    x = nn.functional.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    return (x * 255).clamp(0, 255).to(torch.uint8)


class SmallAE(Autoencoder):
    def __init__(self, d=4):
        torch.manual_seed(0)
        enc = nn.Sequential(nn.Flatten(), nn.Linear(784, d))
        dec = nn.Sequential(nn.Linear(d, 784), nn.Unflatten(1, (1, 28, 28)))
        super().__init__(enc, dec, Bernoulli(), d)


class U8(torch.utils.data.Dataset):
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


def make_ctx(test: torch.Tensor, tmp_path, n=300) -> EvalContext:
    return EvalContext(model=SmallAE(), train=ImageSet("toy", "train", digit_like(200, 1)),
                       test=ImageSet("toy", "test", test), device=torch.device("cpu"), samplers=("prior",),
                       n_samples=n, batch_size=128, cache_dir=tmp_path / ".cache")


def test_shipped_weights_match_their_pinned_hash_and_record_their_accuracy():
    assert file_sha256(ASSET) == ASSET_SHA256
    assert ASSET.stat().st_size < 2_000_000
    assert extractor_meta()["test_accuracy"] >= 0.99


def test_damaged_weights_are_refused(monkeypatch):
    import aebench.metrics.digits_extractor as de

    monkeypatch.setattr(de, "ASSET_SHA256", "0" * 64)
    with pytest.raises(AebenchError, match="damaged"):
        load_digits_cnn()


def test_fid_equals_torch_fidelity_called_directly(tmp_path):
    import torch_fidelity

    ctx = make_ctx(digit_like(300, 2), tmp_path)
    out = fidelity.fid(ctx, kid_subsets=20, kid_subset_size=200)
    name = fidelity.Extractor("digits", torch.device("cpu")).name
    for source, images in (("prior", ctx.samples("prior", 300)), ("recon", ctx.reconstructions("test"))):
        ref = torch_fidelity.calculate_metrics(
            input1=U8(images), input2=U8(ctx.test.images), feature_extractor=name, fid=True, kid=True, prc=True,
            kid_subsets=20, kid_subset_size=200, cuda=False, cache=False, verbose=False, save_cpu_ram=True)
        assert out[source] == pytest.approx(ref["frechet_inception_distance"], rel=1e-4)
        assert out[f"kid_{source}"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-3, abs=1e-6)
        assert out[f"precision_{source}"] == pytest.approx(ref["precision"], abs=1e-9)
        assert out[f"recall_{source}"] == pytest.approx(ref["recall"], abs=1e-9)
    assert out["prior"] > 1.0  # an untrained decoder's samples are far from the data


def test_kid_reference_equals_torch_fidelity_and_reuses_the_real_terms():
    from torch_fidelity.metric_kid import kid_features_to_metric

    from aebench.metrics.kid import KIDReference

    g = torch.Generator().manual_seed(0)
    real = torch.rand(700, 32, generator=g).relu() * 3
    ref = KIDReference(real)
    # two generated sets of one size share the cached real terms; a third size draws other subsets
    for n, shift in ((400, 0.0), (400, 0.3), (250, 0.1)):
        gen = torch.rand(n, 32, generator=g) * 3 + shift
        mean, std = ref(gen, subsets=7, size=200)
        tf = kid_features_to_metric(gen, real, kid_subsets=7, kid_subset_size=200, rng_seed=2020, verbose=False)
        assert mean == pytest.approx(tf["kernel_inception_distance_mean"], rel=1e-4, abs=1e-7)
        assert std == pytest.approx(tf["kernel_inception_distance_std"], rel=1e-3, abs=1e-7)
    assert sorted(ref._real_terms) == [(250, 200, 7), (400, 200, 7)]
    with pytest.raises(AebenchError, match="subset size 500"):
        ref(torch.rand(400, 32), subsets=2, size=500)


def test_the_digits_cnn_pooling_equals_max_pool2d():
    from aebench.metrics.digits_extractor import Pool2

    g = torch.Generator().manual_seed(0)
    for shape in ((3, 16, 28, 28), (3, 64, 7, 7), (2, 4, 5, 6)):
        x = torch.randn(shape, generator=g).relu()
        assert torch.equal(Pool2()(x), nn.functional.max_pool2d(x, 2))


def test_test_set_against_itself_scores_zero_and_a_shifted_set_does_not():
    ext = fidelity.Extractor("digits", torch.device("cpu"))
    real = ext.features(digit_like(400, 3))
    same = fidelity.compare(real, real, fidelity.statistics(real), True, True, 20, 200, 3)
    assert abs(same["fid"]) < 1e-6 and same["precision"] == 1.0 and same["recall"] == 1.0
    other = ext.features(digit_like(400, 4).flip(-1).transpose(-1, -2))
    assert fidelity.compare(other, real, fidelity.statistics(real), False, False, 20, 200, 3)["fid"] > 0.1


def test_reference_statistics_are_cached_on_disk_and_reused(tmp_path, monkeypatch):
    test = digit_like(300, 5)
    fidelity.fid(make_ctx(test, tmp_path), kid=False, prc=False)
    files = list((tmp_path / ".cache" / "fid-reference").glob("*.pt"))
    assert len(files) == 1 and files[0].name.startswith("toy-test-n300-digits-")
    calls = []
    real_features = fidelity.Extractor.features

    def counting(self, images):
        calls.append(len(images))
        return real_features(self, images)

    monkeypatch.setattr(fidelity.Extractor, "features", counting)
    fidelity.fid(make_ctx(test, tmp_path), kid=False, prc=False)
    assert calls == [300, 300]  # the prior samples and the reconstructions; the test set came from the cache
    calls.clear()
    fidelity.fid(make_ctx(test, tmp_path, n=200), kid=False, prc=False, recon=False)
    assert calls == [200, 200]  # another count is another reference


def test_inception_without_weights_says_what_to_do(tmp_path, monkeypatch):
    import urllib.error

    from aebench.metrics import extractors

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(extractors.urllib.request, "urlopen", offline)
    monkeypatch.setenv("AEBENCH_CACHE", str(tmp_path / "cache"))
    ctx = make_ctx(digit_like(20, 6), tmp_path)
    with pytest.raises(AebenchError, match="feature_extractor_weights_path"):
        fidelity.fid(ctx, extractor="inception")
    with pytest.raises(AebenchError, match="is not a file"):
        fidelity.fid(ctx, extractor="inception", feature_extractor_weights_path=str(tmp_path / "missing.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not weights")
    with pytest.raises(AebenchError, match="cannot load inception extractor weights"):
        fidelity.fid(ctx, extractor="inception", feature_extractor_weights_path=str(junk))
    assert fidelity.resolve_extractor("auto", (3, 32, 32)) == "inception"
    assert fidelity.resolve_extractor("auto", (1, 28, 28)) == "digits"


def test_digits_extractor_is_accurate_on_real_mnist(mnist_root):
    from aebench.data import load
    from aebench.metrics.digits_extractor import accuracy

    test = load("mnist", "test", mnist_root, download=False)
    net, _ = load_digits_cnn()
    assert accuracy(net, test.images, test.labels) >= 0.99


def test_real_mnist_scores_near_its_own_test_set(mnist_root):
    from aebench.data import load

    ext = fidelity.Extractor("digits", torch.device("cpu"))
    test = ext.features(load("mnist", "test", mnist_root, download=False).images[:2000])
    train = ext.features(load("mnist", "train", mnist_root, download=False).images[:2000])
    noise = ext.features(digit_like(2000, 7))
    stats = fidelity.statistics(test)
    real = fidelity.compare(train, test, stats, True, True, 20, 1000)
    fake = fidelity.compare(noise, test, stats, True, True, 20, 1000)
    assert real["fid"] < 0.05 * fake["fid"] and real["kid"] < 0.05 * fake["kid"]
    assert real["precision"] > 0.7 and real["recall"] > 0.7
    assert fake["precision"] < 0.5 and fake["recall"] < 0.05  # blobs cover none of the digits


SUITE = """\
version: 1
name: all-metrics
datasets: [mnist]
latent_dim: 8
models: [ae, vae]
train: {epochs: 1, batch_size: 100}
data: {train_limit: 600, test_limit: 300}
eval: {n_samples: 300, samplers: [prior, gaussian]}
metrics: [recon, {name: fid, kid_subsets: 10}, active_units, kl_w2, blur, probe, {name: nll, k: 8}, cost]
"""


def test_a_run_writes_every_metric_and_not_applicable_reasons(mnist_root, write_suite, tmp_path):
    import json

    from aebench.cli import main
    from aebench.store.jobdir import JobDir

    assert main(["run", str(write_suite(SUITE)), "--results", str(tmp_path / "r"), "--data-root", str(mnist_root),
                 "--no-download", "--no-progress", "--device", "cpu"]) == 0
    jobs = {p.parent.name.split("-")[0]: p.parent for p in (tmp_path / "r" / "all-metrics").glob("*/metrics.json")}
    out = {model: json.loads((job / "metrics.json").read_text()) for model, job in jobs.items()}
    assert set(out) == {"ae", "vae"}
    for model, m in out.items():
        v = m["values"]
        for key in ("recon/mse", "fid/prior", "fid/gaussian", "fid/recon", "fid/kid_prior", "fid/precision_recon",
                    "fid/recall_gaussian", "active_units/count", "kl_w2/kl", "kl_w2/w2", "sharpness/ratio_prior",
                    "sharpness/ratio_recon", "probe/accuracy", "cost/params", "cost/train_seconds"):
            assert v.get(key) is not None, (model, key)
        assert "details" not in m and JobDir(jobs[model]).details()["fid/setup"]["n_reference"] == 300
    assert out["ae"]["not_applicable"] == {"nll": "the encoder is deterministic"}
    assert "nll/nats" not in out["ae"]["values"] and out["vae"]["values"]["nll/nats"] > 0
    assert "kl_w2/sample_kl" in out["vae"]["values"] and "kl_w2/sample_kl" not in out["ae"]["values"]


def test_extractor_training_is_reproducible(mnist_root, tmp_path):
    from aebench.metrics.digits_extractor import train_extractor

    threads = torch.get_num_threads()
    try:
        a = train_extractor(mnist_root, tmp_path / "a.pt", epochs=3, threads=1, limit=1000, log=lambda m: None)
        b = train_extractor(mnist_root, tmp_path / "b.pt", epochs=3, threads=1, limit=1000, log=lambda m: None)
    finally:
        torch.set_num_threads(threads)
    assert a["sha256"] == b["sha256"] == file_sha256(tmp_path / "a.pt")
    assert extractor_meta(tmp_path / "a.pt")["test_accuracy"] == a["test_accuracy"] > 0.5  # it learns even so
    net, digest = load_digits_cnn(tmp_path / "a.pt")  # a retrained file loads by path, with its own hash
    assert digest == a["sha256"]
