"""Objective cards: every built-in model states its objective, reduction, weights, optimisers and paper; the
cards name every numeric hyperparameter; docs/models.md is exactly the generator's output; and the prior
sampler refuses latent spaces whose prior is not N(0, I)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from scipy import stats

from aebench.cli import main
from aebench.docs import CARD_KEYS, FAMILIES, card_problems, is_builtin, models_markdown
from aebench.models.base import Autoencoder, ModelConfig, build_model
from aebench.models.samplers import PriorSampler
from aebench.models.svae import to_sphere
from aebench.registry import MODELS

DOC = Path(__file__).resolve().parents[1] / "docs" / "models.md"
BUILTIN = [n for n in MODELS.names() if is_builtin(MODELS.entry(n))]


@pytest.fixture(scope="module")
def generated() -> str:
    return models_markdown()


@pytest.mark.parametrize("name", BUILTIN)
def test_card_is_complete(name):
    cls = MODELS.get(name)
    assert "card" in vars(cls), f"{name}: {cls.__name__} states no card of its own (an inherited one may be wrong)"
    assert set(cls.card) >= set(CARD_KEYS)
    assert card_problems(cls) == []


def test_card_check_catches_an_undocumented_weight():
    @dataclasses.dataclass
    class Config(ModelConfig):
        beta: float = 1.0
        gamma: int = 3
        flag: bool = True  # not a weight: not required
        name: str = "x"

    class Model(Autoencoder):
        card = {"objective": "rec + beta * kl + gamma * tc", "reduction": "sum over pixels", "weights": "beta = 1",
                "optimisers": "one", "paper": ""}

    Model.Config = Config
    assert card_problems(Model) == ["card['paper'] is empty", "card['weights'] does not name gamma (default 3)"]
    Model.card = {**Model.card, "weights": "beta-vae's beta_max = 1", "paper": "p"}  # near misses are not names
    assert card_problems(Model) == [f"card['weights'] does not name {f} (default {v!r})"
                                    for f, v in (("beta", 1.0), ("gamma", 3))]


def test_every_builtin_model_has_a_family():
    placed = [n for _, _, names in FAMILIES for n in names]
    assert sorted(placed) == sorted(BUILTIN), "add new models to a family in aebench/docs.py FAMILIES"


def test_docs_models_md_is_the_generators_output(generated):
    assert DOC.read_text() == generated, "docs/models.md is stale: aebench ls models --markdown > docs/models.md"
    for name in BUILTIN:
        assert f"### `{name}`" in generated


def test_cli_prints_the_reference(generated, capsys):
    assert main(["ls", "models", "--markdown"]) == 0
    assert capsys.readouterr().out == generated
    assert main(["ls", "samplers", "--markdown"]) == 2
    assert "--markdown works with `aebench ls models`" in capsys.readouterr().err


def _tiny(name: str) -> Autoencoder:
    return build_model(name, (1, 8, 8), 3, backbone="mlp", backbone_options={"hidden": [8]})


def test_prior_sampler_refuses_non_euclidean_latent_spaces():
    sampler = PriorSampler()
    reason = sampler.applies_to(_tiny("poincare-vae"))
    assert reason is not None and "poincare" in reason
    for name in ("vae", "ae", "svae", "dcgan"):  # euclidean, sphere, and a generator without encoder
        assert sampler.applies_to(_tiny(name)) is None, name


def test_prior_draws_normalised_are_uniform_on_the_sphere():
    """Why the sphere is allowed: svae normalises its codes, and a normalised N(0, I) draw is uniform on S^2,
    whose every coordinate is uniform on [-1, 1] (Archimedes' hat-box theorem)."""
    z = PriorSampler().fit(torch.zeros(1, 3)).sample(20_000, torch.Generator().manual_seed(0))
    on_sphere = to_sphere(z.double())
    assert torch.allclose(on_sphere.norm(dim=1), torch.ones(len(z), dtype=torch.float64))
    for axis in range(3):
        assert stats.kstest(on_sphere[:, axis].numpy(), stats.uniform(loc=-1, scale=2).cdf).pvalue > 1e-3
