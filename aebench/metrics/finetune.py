"""Fine-tuning with few labels: is the trained encoder a better starting point than a random one?

For each n in ``label_counts``, a fixed class-balanced subset of n training images (n // C per class, the
first n % C classes one more; drawn from the job's seeded generator, the same for both runs) trains the
encoder together with a linear head on its code (the posterior mean, ``encode(x).mean``) by cross-entropy
with Adam (``lr``, ``epochs`` passes over the subset in shuffled mini-batches of ``batch_size``), starting

- from the trained model (``acc_pretrained_<n>``), and
- from the same architecture re-initialised (every submodule's ``reset_parameters``, under the job's seed):
  ``acc_random_<n>``.

Both runs train copies (the evaluated model is untouched) with the same head initialisation and the same
batches. Scores are test accuracies; ``gain_<n>`` = pretrained - random (higher is better throughout).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from aebench.errors import SuiteError
from aebench.metrics.base import EvalContext, NotApplicable


@dataclass
class FinetuneSettings:
    """``label_counts``: the labelled subset sizes. ``epochs``, ``lr``, ``batch_size``: Adam on the subset."""

    label_counts: list[int] = field(default_factory=lambda: [100, 1000])
    epochs: int = 50
    lr: float = 1e-3
    batch_size: int = 50

    def __post_init__(self) -> None:
        if not self.label_counts or min(self.label_counts) < 1:
            raise SuiteError(None, "label_counts", f"must be positive counts, got {self.label_counts}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise SuiteError(None, name, f"must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise SuiteError(None, "lr", f"must be > 0, got {self.lr}")


def balanced_subset(labels: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of n items, n // C per class (the first n % C classes one more), random within each class."""
    classes = torch.unique(labels)
    per = [n // len(classes) + (1 if i < n % len(classes) else 0) for i in range(len(classes))]
    picked = []
    for c, k in zip(classes.tolist(), per):
        members = torch.nonzero(labels == c).flatten()
        if len(members) < k:
            raise NotApplicable(f"{n} class-balanced labels need {k} of class {c}, the training set has "
                                f"{len(members)}")
        picked.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return torch.cat(picked).sort().values


def reinitialise(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` with every parameterised submodule re-initialised by its own rule, seeded."""
    fresh = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in fresh.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return fresh


def train_and_test(model: nn.Module, head: nn.Module, x_tr: torch.Tensor, y_tr: torch.Tensor,
                   test_batches, epochs: int, lr: float, batch_size: int, seed: int) -> float:
    """Train encoder and head on (x_tr, y_tr); test accuracy over ``test_batches`` of (x, y)."""
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # dropout draws, reproducibly
        torch.manual_seed(seed)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(x_tr), generator=gen).to(x_tr.device)
            for i in range(0, len(x_tr), batch_size):
                b = order[i : i + batch_size]
                if len(b) == 1 and len(x_tr) > 1:
                    continue  # a last batch of one item: batch norm cannot train on it
                loss = nn.functional.cross_entropy(head(model.encode(x_tr[b]).mean), y_tr[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    model.eval()
    correct, total = 0, 0
    with torch.no_grad():
        for x, y in test_batches():
            correct += int((head(model.encode(x).mean).argmax(1) == y).sum())
            total += len(y)
    return correct / total


def finetune(ctx: EvalContext, **options: Any) -> dict[str, Any]:
    """Test accuracy after fine-tuning from the trained encoder vs from a random one (``FinetuneSettings``)."""
    s = FinetuneSettings(**options)
    if not getattr(ctx.model, "has_encoder", True):
        raise NotApplicable("the model has no encoder")
    if not any(p.requires_grad for p in ctx.model.encoder.parameters()):
        raise NotApplicable("the encoder has no trainable parameters (nothing to fine-tune: the probe measures "
                            "its fixed codes)")
    y_all = ctx.train.labels.cpu()
    n_classes = int(max(int(y_all.max()), int(ctx.test.labels.max())) + 1)

    def test_batches():
        for i in range(0, len(ctx.test), ctx.batch_size):
            yield (ctx.test.floats(slice(i, i + ctx.batch_size)).to(ctx.device),
                   ctx.test.labels[i : i + ctx.batch_size].to(ctx.device))

    out: dict[str, Any] = {}
    for n in s.label_counts:
        if n > len(ctx.train):
            raise NotApplicable(f"label_counts {n} exceeds the {len(ctx.train)} training images")
        idx = balanced_subset(y_all, n, ctx.generator(f"finetune/labels/{n}"))
        x_tr = ctx.train.floats(idx.to(ctx.train.images.device)).to(ctx.device)
        y_tr = y_all[idx].to(ctx.device)
        ctx.model.eval()
        with torch.no_grad():
            latent = ctx.model.encode(x_tr[:1]).mean.shape[1]
        head0 = reinitialise(nn.Linear(latent, n_classes), ctx.seed).to(ctx.device)
        accs = {}
        for start, model in (("pretrained", copy.deepcopy(ctx.model)), ("random", reinitialise(ctx.model, ctx.seed))):
            accs[start] = train_and_test(model.to(ctx.device), copy.deepcopy(head0), x_tr, y_tr, test_batches,
                                         s.epochs, s.lr, s.batch_size, ctx.seed)
        out[f"acc_pretrained_{n}"], out[f"acc_random_{n}"] = accs["pretrained"], accs["random"]
        out[f"gain_{n}"] = accs["pretrained"] - accs["random"]
    out["setup"] = {"epochs": s.epochs, "lr": s.lr, "batch_size": s.batch_size, "classes": n_classes}
    return out
