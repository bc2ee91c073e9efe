"""Training overhead: one epoch of aebench's training against a plain PyTorch loop, side by side.

The reference loop is written here, by hand: the same network (same initial weights), batch size,
optimizer and data, already in memory as float32. The ratio aebench / reference is the overhead
of aebench's loop (uint8 batches converted on the fly, loss terms summed on the device, the model API).
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from benchmarks.conftest import record

ROUNDS = 3
BATCH = 128
# (model, backbone, backbone options, latent, images used): costly epochs use a subset on the CPU
CASES = {
    "ae-mlp": ("ae", "mlp", {"hidden": [512, 256]}, 32, 60_000),
    "vae-mlp": ("vae", "mlp", {"hidden": [512, 256]}, 32, 60_000),
    "contractive-ae-mlp": ("contractive-ae", "mlp", {"hidden": [512, 256]}, 32, 10_000),
    "ae-conv": ("ae", "conv", {}, 16, 1_280),
}
_reference_seconds: dict[str, float] = {}


def _build(case: str, params: dict | None = None):
    from aebench.models import build_model

    name, backbone, options, latent, _ = CASES[case]
    torch.manual_seed(0)
    return build_model(name, (1, 28, 28), latent, params or {}, backbone, options, "bernoulli")


def _reference_loss(case: str, model, x: torch.Tensor) -> torch.Tensor:
    """Each objective written out in plain PyTorch, on the model's own encoder and decoder modules."""
    rec = lambda logits: F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1).mean()  # noqa: E731
    if case.startswith("vae"):
        mean, logvar = model.encoder(x).chunk(2, dim=1)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean()
        return rec(model.decoder(z)) + kl
    if case.startswith("contractive"):
        from torch.func import jacrev, vmap

        z = model.encoder(x)
        jac = vmap(jacrev(lambda xi: model.encoder(xi.unsqueeze(0)).squeeze(0)))(x)
        return rec(model.decoder(z)) + model.config.lam * jac.pow(2).flatten(1).sum(1).mean()
    return rec(model.decoder(model.encoder(x)))


def reference_epoch(case: str, model, data: torch.Tensor) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    perm = torch.randperm(data.shape[0])
    for i in range(0, data.shape[0], BATCH):
        x = data[perm[i : i + BATCH]]
        loss = _reference_loss(case, model, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def aebench_epoch(model, images) -> None:
    from aebench.models.base import TrainSettings
    from aebench.runner.train import train

    train(model, images, TrainSettings("adam", 1e-3), epochs=1, batch_size=BATCH, seed=0,
          device=torch.device("cpu"))


@pytest.mark.parametrize("impl", ["reference", "aebench"])
@pytest.mark.parametrize("case", list(CASES))
def test_epoch(benchmark, mnist, case, impl):
    from aebench.registry import BACKBONES, MODELS

    name, backbone = CASES[case][:2]
    if name not in MODELS or backbone not in BACKBONES:
        pytest.skip(f"{name} on {backbone} is not registered")
    train_set = mnist[0].subset(CASES[case][4])
    benchmark.group = f"epoch {case} ({len(train_set)} images)"
    model = _build(case)
    if impl == "reference":
        data = train_set.floats()
        benchmark.pedantic(reference_epoch, args=(case, model, data), rounds=ROUNDS, iterations=1, warmup_rounds=0)
        _reference_seconds[case] = benchmark.stats.stats.median
    else:
        benchmark.pedantic(aebench_epoch, args=(model, train_set), rounds=ROUNDS, iterations=1, warmup_rounds=0)
        ours = benchmark.stats.stats.median
        ref = _reference_seconds.get(case)
        record(f"epoch/{case}", images=len(train_set), aebench_s=ours, reference_s=ref,
               ratio=None if ref is None else ours / ref)


def test_contractive_cost_against_plain_ae_step(benchmark, mnist):
    """The contractive penalty's price: a contractive-AE step over a plain AE step, MLP backbone."""
    from aebench.models.base import TrainSettings
    from aebench.registry import MODELS

    if "contractive-ae" not in MODELS:
        pytest.skip("contractive-ae is not registered")
    x = mnist[0].floats(slice(0, BATCH))
    steps = {}
    for case, params in (("ae-mlp", {}), ("contractive-ae-mlp", {}),
                         ("contractive-ae-mlp", {"estimator": "hutchinson"})):
        model = _build(case, params)
        opts = model.configure_optimizers(TrainSettings())
        model.train_step(x, opts)
        t0 = time.perf_counter()
        for _ in range(30):
            model.train_step(x, opts)
        steps[case + ("-hutchinson" if params else "")] = (time.perf_counter() - t0) / 30
    model = _build("contractive-ae-mlp")
    opts = model.configure_optimizers(TrainSettings())
    benchmark.group = "contractive step"
    benchmark(model.train_step, x, opts)
    record("step/contractive-over-ae", ae_step_s=steps["ae-mlp"], contractive_step_s=steps["contractive-ae-mlp"],
           ratio=steps["contractive-ae-mlp"] / steps["ae-mlp"],
           hutchinson_step_s=steps["contractive-ae-mlp-hutchinson"],
           hutchinson_ratio=steps["contractive-ae-mlp-hutchinson"] / steps["ae-mlp"])
