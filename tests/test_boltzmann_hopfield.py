"""The RBM and the Hopfield net against independent references: energies enumerated state by state, the exact
log-likelihood of small RBMs by enumerating hidden states, a Hebbian weight matrix built here, and the
retrieval metric's arithmetic on models whose answer is known."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from test_models import bars

from aebench.data.base import ImageSet
from aebench.errors import AebenchError
from aebench.metrics.base import EvalContext, evaluate
from aebench.metrics.likelihood import nll
from aebench.metrics.retrieval import capacity_curve, corrupt, retrieval
from aebench.models.base import Autoencoder, Encoding, TrainSettings, build_model
from aebench.models.hopfield import Hopfield, HopfieldConfig
from aebench.models.likelihood import Bernoulli
from aebench.models.rbm import GibbsSampler, ais_betas

BARS_SHAPE = (1, 8, 8)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is faster




def states(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)


def rbm(shape=BARS_SHAPE, hidden: int = 4, scale: float = 0.0, seed: int = 0, **params):
    torch.manual_seed(seed)
    model = build_model("rbm", shape, hidden, params)
    if scale:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, scale)
    return model


def energy(model, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """E(v, h) = -b.v - c.h - h^T W v for every pair of rows (len(v), len(h)), in float64."""
    W, b, c = model.W.detach().double(), model.b.detach().double(), model.c.detach().double()
    return -(v @ b).unsqueeze(1) - (h @ c).unsqueeze(0) - v @ W.t() @ h.t()


def exact_log_z(model) -> float:
    """log Z = log sum_h exp(c.h) prod_i (1 + exp(b_i + (W^T h)_i)): the hidden states enumerated."""
    W, b, c = model.W.detach().double(), model.b.detach().double(), model.c.detach().double()
    hs = states(W.shape[0])
    return float(torch.logsumexp(hs @ c + F.softplus(hs @ W + b).sum(1), 0))


def exact_log_p(model, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log sum_h exp(-E(x, h)) - log Z, hidden states enumerated."""
    hs = states(model.W.shape[0])
    return torch.logsumexp(-energy(model, x.flatten(1).double(), hs), 1) - exact_log_z(model)


def ctx_for(model, test: torch.Tensor, train: torch.Tensor | None = None) -> EvalContext:
    u8 = lambda t: t.mul(255).round().to(torch.uint8)  # noqa: E731
    train = test if train is None else train
    return EvalContext(model=model, train=ImageSet("toy", "train", u8(train)), test=ImageSet("toy", "test", u8(test)),
                       device=torch.device("cpu"), batch_size=64)


# -- RBM ---------------------------------------------------------------------------------------------------------
def test_free_energy_is_minus_log_sum_over_hidden_states():
    model = rbm((1, 2, 3), hidden=5, scale=0.8)
    v = states(6)
    direct = -torch.logsumexp(-energy(model, v, states(5)), 1)
    assert torch.allclose(model.free_energy(v.float()).double(), direct, atol=1e-5)


def test_conditionals_match_the_enumerated_joint():
    model = rbm((1, 1, 3), hidden=2, scale=1.0, seed=1)
    vs, hs = states(3), states(2)
    joint = torch.exp(-energy(model, vs, hs))  # unnormalised p(v, h), (8, 4)
    p_h_given_v = (joint.unsqueeze(2) * hs.unsqueeze(0)).sum(1) / joint.sum(1, keepdim=True)  # (8, 2)
    p_v_given_h = (joint.t().unsqueeze(2) * vs.unsqueeze(0)).sum(1) / joint.t().sum(1, keepdim=True)  # (4, 3)
    enc = model.encode(vs.float().view(8, 1, 1, 3))
    assert torch.allclose(enc.mean.double(), p_h_given_v, atol=1e-6)
    assert torch.allclose(enc.logvar.exp().double(), p_h_given_v * (1 - p_h_given_v), atol=1e-6)
    assert torch.allclose(torch.sigmoid(model.decode(hs.float())).flatten(1).double(), p_v_given_h, atol=1e-6)
    assert torch.allclose(model.generate(hs.float()), torch.sigmoid(model.decode(hs.float())))


def test_ais_log_likelihood_matches_enumeration():
    trained = rbm(hidden=6, n_betas=300, n_runs=64)  # base rate from the data it saw
    opt = trained.configure_optimizers(TrainSettings(lr=1e-2))
    x = bars(32)
    for _ in range(60):
        trained.train_step(x, opt)
    assert float(trained.data_count) == 60 * 32
    random = rbm((1, 3, 4), hidden=8, scale=0.7, seed=2, n_betas=300, n_runs=64)  # no data seen: base rate = b
    for model, data in ((trained, x), (random, (torch.rand(20, 1, 3, 4) > 0.5).float())):
        model.eval()
        torch.manual_seed(0)
        ll = model.log_likelihood(data)
        assert torch.allclose(ll, exact_log_p(model, data), atol=0.1), (ll - exact_log_p(model, data)).abs().max()
        assert abs(model.log_partition() - exact_log_z(model)) < 0.1
    betas = ais_betas(50)
    assert len(betas) == 51 and betas[0] == 0 and betas[-1] == 1 and bool((betas.diff() > 0).all())


def test_pcd_raises_the_exact_log_likelihood_and_nll_reports_it():
    model = rbm(n_betas=300, n_runs=64)
    x = bars(32)
    opt = model.configure_optimizers(TrainSettings(lr=3e-3))
    before = float(exact_log_p(model, x).mean())
    chains = model.chains.clone()
    for _ in range(150):
        model.train_step(x, opt)
    after = float(exact_log_p(model, x).mean())
    assert after > before + 5, (before, after)  # ~ -44.4 -> ~ -34 nats
    assert not torch.equal(chains, model.chains)  # the chains persist between updates
    ctx = ctx_for(model, x)
    res = evaluate(ctx, [("nll", {})])
    assert "nll" not in res["not_applicable"], res["not_applicable"]
    assert res["values"]["nll/nats"] == pytest.approx(-after, abs=0.1)
    assert nll(ctx)["nats"] == res["values"]["nll/nats"]  # log Z is estimated once and reused


def test_rbm_refuses_a_gaussian_likelihood_and_bad_settings():
    with pytest.raises(AebenchError, match="bernoulli"):
        build_model("rbm", BARS_SHAPE, 4, {}, likelihood="gaussian", likelihood_options={"sigma": 0.1})
    with pytest.raises(Exception, match="n_chains"):
        build_model("rbm", BARS_SHAPE, 4, {"n_chains": 0})


def test_gibbs_sampler_draws_the_model_marginal_of_h():
    model = rbm((1, 1, 3), hidden=2, scale=1.0, seed=3)
    vs, hs = states(3), states(2)
    p_h = torch.exp(-energy(model, vs, hs)).sum(0)
    p_h = p_h / p_h.sum()
    sampler = GibbsSampler(steps=30).fit(torch.zeros(5, 2), model)
    z = sampler.sample(4000, torch.Generator().manual_seed(0))
    assert z.shape == (4000, 2) and z.dtype == torch.float32
    freq = torch.stack([(z == h.float()).all(1).double().mean() for h in hs])
    assert (freq - p_h).abs().sum() < 0.06, (freq, p_h)  # TV of 4000 draws: ~0.02
    assert torch.equal(z, sampler.sample(4000, torch.Generator().manual_seed(0)))
    assert torch.equal(GibbsSampler(steps=3, seed=5).fit(z, model).sample(10, torch.Generator().manual_seed(1)),
                       GibbsSampler(steps=3, seed=5).fit(z, model).sample(10, torch.Generator().manual_seed(2)))
    ae = build_model("ae", BARS_SHAPE, 4, {}, "mlp", {"hidden": [8]})
    assert "not an RBM" in GibbsSampler().applies_to(ae) and GibbsSampler().applies_to(model) is None
    with pytest.raises(AebenchError):
        GibbsSampler().fit(z, ae)
    with pytest.raises(AebenchError, match="steps"):
        GibbsSampler(steps=0)


# -- Hopfield ----------------------------------------------------------------------------------------------------
def random_images(k: int, shape=(1, 10, 10), seed: int = 0) -> torch.Tensor:
    return (torch.rand(k, *shape, generator=torch.Generator().manual_seed(seed)) > 0.5).float()


def hopfield(k: int, shape=(1, 10, 10), latent: int = 4, **params) -> Hopfield:
    return build_model("hopfield", shape, latent, {"n_stored": k, **params})


def hebbian(images: torch.Tensor) -> torch.Tensor:
    xi = images.flatten(1) * 2 - 1
    w = xi.t() @ xi / xi.shape[1]
    return w - torch.diag(torch.diag(w))


def test_hebbian_weights_and_stored_patterns_below_capacity_are_fixed_points():
    images = random_images(3)
    net = hopfield(3)
    assert net.store(images) == 3 and net.store(images) == 0  # full
    w = hebbian(images)
    assert torch.allclose(net.memory.weight(), w, atol=1e-6)
    xi = images.flatten(1) * 2 - 1
    assert torch.equal(torch.sign(xi @ w), xi)  # the reference: each pattern is stable under its own W
    assert torch.equal(net.recall(xi), xi)
    s = torch.sign(torch.randn(5, 100))
    assert torch.allclose(net.memory.field(s), s @ w, atol=1e-5)
    assert torch.allclose(net.memory.energy(s), -0.5 * ((s @ w) * s).sum(1), atol=1e-4)


def test_energy_never_rises_under_asynchronous_updates():
    images = random_images(12, (1, 8, 8), seed=1)  # above capacity (0.14 * 64 = 9): spurious minima too
    net = hopfield(12, (1, 8, 8))
    net.store(images)
    w = hebbian(images).double()
    energies = []
    net.recall(torch.sign(torch.randn(3, 64)), trace=lambda s, i: energies.append(-0.5 * ((s.double() @ w) * s).sum(1)))
    e = torch.stack(energies)
    assert len(energies) >= 64 and bool((e.diff(dim=0) <= 1e-9).all())
    final = net.recall(torch.sign(torch.randn(3, 64, generator=torch.Generator().manual_seed(4))))
    h = final @ hebbian(images)
    assert bool(((h == 0) | (torch.sign(h) == final)).all())  # a fixed point


def test_retrieval_recovers_well_below_capacity_and_fails_far_above():
    patterns = random_images(60)
    curve = capacity_curve(lambda k: hopfield(k), [3, 5, 60], patterns, fraction=0.1, tolerance=0.05)
    assert curve["recovered"][:2] == [1.0, 1.0] and curve["overlap"][0] == 1.0
    assert curve["recovered"][2] <= 0.2 and curve["overlap"][2] < 0.8  # load 0.6 >> 0.138
    assert curve["capacity"] == pytest.approx(13.8) and curve["load"] == [0.03, 0.05, 0.6]


def test_training_stores_the_first_n_stored_images_and_fits_the_interface():
    net = hopfield(5, BARS_SHAPE, latent=4)
    assert net.configure_optimizers(TrainSettings()) == [] and not list(net.parameters())
    x = bars(8)
    terms = net.train_step(x[:3], [])
    assert float(terms["loss"]) == 0 and float(terms["stored"]) == 3
    net.train_step(x[3:], [])
    net.train_step(bars(8, seed=1), [])
    assert torch.equal(net.stored_patterns(), x[:5])
    copy = hopfield(5, BARS_SHAPE, latent=4)
    copy.load_state_dict(net.state_dict())
    assert torch.equal(copy.stored_patterns(), x[:5])
    enc = net.encode(x)
    assert enc.mean.shape == (8, 4) and enc.logvar is None
    assert net.decode(enc.mean).shape == (8, *BARS_SHAPE)
    rec = net.reconstruct(x)
    assert rec.shape == x.shape and rec.min() >= 0 and rec.max() <= 1
    assert net.generate(torch.randn(3, 4)).shape == (3, *BARS_SHAPE)
    with pytest.raises(Exception, match="max_sweeps"):
        HopfieldConfig(max_sweeps=0)
    with pytest.raises(AebenchError, match="bernoulli"):
        Hopfield.from_shape(BARS_SHAPE, 4, type("G", (), {"name": "gaussian"})())


# -- the retrieval metric ----------------------------------------------------------------------------------------
class Snap(Autoencoder):
    """An ideal memory of given images: reconstruct returns the nearest one (L1)."""

    def __init__(self, memory: torch.Tensor):
        super().__init__(torch.nn.Identity(), torch.nn.Identity(), Bernoulli(), 1)
        self.memory = memory

    def encode(self, x: torch.Tensor) -> Encoding:
        return Encoding(torch.zeros(x.shape[0], 1))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        d = (x.flatten(1).unsqueeze(1) - self.memory.flatten(1).unsqueeze(0)).abs().sum(2)
        return self.memory[d.argmin(1)]


class Identity(Snap):
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_retrieval_metric_on_models_with_a_known_answer():
    train = random_images(8)
    assert retrieval(ctx_for(Snap(train), train), k=8)["recovered"] == 1.0
    flip = retrieval(ctx_for(Identity(train), train), k=8, fraction=0.1)
    assert flip["recovered"] == 0.0 and flip["overlap"] == pytest.approx(0.8)  # exactly 10 of 100 flipped
    masked = retrieval(ctx_for(Identity(train), train), k=8, corruption="mask", tolerance=0.9)
    hidden_on = train[:, :, 5:, :].flatten(1).mean(1)  # unknown pixels stay 0.5 -> read as 0
    assert masked["overlap"] == pytest.approx(float((1 - 2 * hidden_on / 2).mean()))
    net = hopfield(4)
    net.store(train[:4])
    out = retrieval(ctx_for(net, random_images(8, seed=9)), k=10, corruption="mask")
    assert out["setup"]["k"] == 4 and out["setup"]["source"] == "stored patterns" and out["recovered"] == 1.0
    x, known = corrupt(train, "flip", 0.25, torch.Generator().manual_seed(0))
    assert known is None and bool(((x != train).flatten(1).sum(1) == 25).all())


def test_the_prior_sampler_refuses_the_rbm_whose_hidden_units_are_binary():
    import aebench.catalog  # noqa: F401 - the registries
    from aebench.models.base import build_model
    from aebench.registry import SAMPLERS

    rbm = build_model("rbm", (1, 4, 4), 3, {})
    assert "binary latent space" in SAMPLERS.get("prior")().applies_to(rbm)
    assert SAMPLERS.get("gibbs")().applies_to(rbm) is None and SAMPLERS.get("gmm")().applies_to(rbm) is None
