"""The torch EM of the ``gmm`` sampler against scikit-learn's GaussianMixture: the same log-density for the same
parameters, the same converged log-likelihood on well-separated and on overlapping blobs, and determinism."""

from __future__ import annotations

import pytest
import torch

from aebench.models.gmm_torch import GaussianMixtureFit, fit_gmm
from aebench.models.samplers import GMMSampler

sklearn_mixture = pytest.importorskip("sklearn.mixture")

# Both stop when the mean log-likelihood changes by less than tol = 1e-3 (scikit-learn's default), so their
# converged per-sample log-likelihoods may differ by about that much (1e-5 is typical); parameters may differ
# more (a flat likelihood), so they are not compared.
TOLERANCE = 1e-3

SKEW = [torch.tensor([[1.0, 0.3], [0.0, 0.8]]), torch.tensor([[0.7, 0.0], [0.4, 1.0]]), torch.eye(2)]


def blobs(centres: list[list[float]], n: int, seed: int) -> torch.Tensor:
    """n points per centre, each blob with its own (sheared) covariance."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.tensor(c) + torch.randn(n, 2, generator=g) @ SKEW[i % 3]
                      for i, c in enumerate(centres)]).double()


SEPARATED = [[-6.0, 0.0], [6.0, 0.0], [0.0, 8.0]]
OVERLAPPING = [[0.0, 0.0], [2.5, 0.0], [0.0, 2.5]]  # centres 2.5 standard deviations apart


def sklearn_fit(x: torch.Tensor, k: int, seed: int):
    return sklearn_mixture.GaussianMixture(k, covariance_type="full", random_state=seed).fit(x.numpy())


def test_log_density_equals_sklearns_for_the_same_parameters():
    x = blobs(OVERLAPPING, 300, 0)
    sk = sklearn_fit(x, 3, 0)
    cov = torch.as_tensor(sk.covariances_)
    fit = GaussianMixtureFit(torch.as_tensor(sk.weights_), torch.as_tensor(sk.means_), cov,
                             torch.linalg.cholesky(cov), 0, True, 0.0)
    assert torch.allclose(fit.log_prob(x), torch.as_tensor(sk.score_samples(x.numpy())), rtol=0, atol=1e-9)


@pytest.mark.parametrize("centres", [SEPARATED, OVERLAPPING], ids=["separated", "overlapping"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_converged_log_likelihood_agrees_with_sklearn(centres, seed):
    x = blobs(centres, 400, seed)
    ours = fit_gmm(x, 3, seed=seed)
    assert ours.converged
    assert ours.score(x) == pytest.approx(sklearn_fit(x, 3, seed).score(x.numpy()), abs=TOLERANCE)
    assert ours.score(x) == pytest.approx(ours.lower_bound, abs=TOLERANCE)  # the bound is the score at the end


def test_higher_dimensional_codes_agree_with_sklearn():
    g = torch.Generator().manual_seed(3)
    centres = 6.0 * torch.eye(8)[:5]  # far enough apart that both initialisations find the same optimum
    x = torch.cat([c + torch.randn(300, 8, generator=g) @ (0.3 * torch.randn(8, 8, generator=g) + torch.eye(8))
                   for c in centres]).double()
    ours = fit_gmm(x, 5, seed=0)
    assert ours.score(x) == pytest.approx(sklearn_fit(x, 5, 0).score(x.numpy()), abs=TOLERANCE)


def test_fit_is_deterministic_given_the_seed():
    x = blobs(OVERLAPPING, 300, 4)
    a, b = fit_gmm(x, 3, seed=7), fit_gmm(x, 3, seed=7)
    for name in ("weights", "means", "covariances", "chol"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert a.n_iter == b.n_iter


def test_weights_are_a_distribution_and_covariances_carry_the_floor():
    x = torch.cat([torch.zeros(50, 2), torch.ones(50, 2)]).double()  # two points, repeated: zero spread
    fit = fit_gmm(x, 2, seed=0, reg_covar=1e-4)
    assert float(fit.weights.sum()) == pytest.approx(1.0, abs=1e-9)
    assert torch.allclose(fit.covariances, 1e-4 * torch.eye(2, dtype=torch.float64).expand(2, 2, 2), atol=1e-12)


def test_the_gmm_sampler_fits_on_the_models_device_and_samples_on_the_cpu():
    model = torch.nn.Linear(2, 2)  # stands in for a model: the fit runs where its parameters are
    codes = blobs(SEPARATED, 200, 5).float()
    s = GMMSampler(components=3).fit(codes, model)
    assert s.means.device.type == "cpu" and s.means.dtype == torch.float64
    z = s.sample(600, torch.Generator().manual_seed(0))
    assert z.shape == (600, 2) and z.dtype == torch.float32
    assert float(s.weights.min()) > 0.3  # three equal blobs found
