"""The model and sampler reference, generated from the code: each model's objective card and config defaults,
each sampler's description, options and the models it serves.

``aebench ls models --markdown`` prints it and docs/models.md is its output; tests/test_cards.py keeps the two
equal, so the document cannot drift from the code. Loss-scale confusion (a KL weight beside a per-pixel mean or
a per-image sum?) is what the cards answer, so the page leads with the convention they share.
"""

from __future__ import annotations

import dataclasses
from typing import Any

CARD_KEYS = ("objective", "reduction", "weights", "optimisers", "paper")

# The order of the reference page; a registered model in no family is listed under "Other".
FAMILIES: list[tuple[str, str, tuple[str, ...]]] = [
    ("The lecture's eleven", "the deterministic autoencoders and their regularisers, the VAE, IWAE, WAE and RAE",
     ("ae", "dropout-ae", "sparse-ae", "contractive-ae", "denoising-ae", "vae", "beta-vae", "iwae", "wae-mmd",
      "wae-gan", "rae")),
    ("VAE family", "other bounds, disentangling, other reconstruction terms and prior matchings",
     ("miwae", "piwae", "ciwae", "disentangled-beta-vae", "factor-vae", "beta-tc-vae", "msssim-vae", "info-vae",
      "cv-vae", "two-stage-vae")),
    ("RAE variants", "the RAE paper's other decoder regularisers", ("rae-gp", "rae-sn")),
    ("Flows and learned priors", "richer posteriors or priors", ("vamp", "vae-iaf", "vae-linnf")),
    ("Geometric latent spaces", "the hypersphere and the Poincaré ball", ("svae", "poincare-vae")),
    ("Hamiltonian", "posterior samples refined by Hamiltonian dynamics", ("hvae", "rhvae")),
    ("Adversarial", "discriminators on codes or images", ("aae", "vae-gan")),
    ("Quantised", "discrete codes", ("vq-vae", "hrq-vae")),
    ("Reference generators", "not autoencoders trained by gradient on a reconstruction: baselines",
     ("rbm", "hopfield", "dcgan")),
]

SCALE_NOTE = (
    "**The scale of every loss.** Unless a card says otherwise, `-log p(x | z)` is the suite's likelihood summed "
    "over pixels, in nats per image (`bernoulli`: the BCE of the decoder's logits; `gaussian`: "
    "`||x - x^||^2 / (2 sigma^2) + (D/2) log(2 pi sigma^2)`), latent terms are summed over latent dimensions, and "
    "every term is averaged over the batch. A weight on a latent term is therefore relative to a reconstruction of "
    "about 100 nats per MNIST image, not to a per-pixel mean (libraries that average over pixels need weights "
    "about D times smaller for the same balance)."
)


def is_builtin(entry: Any) -> bool:
    """An entry aebench itself registers (catalog.py), not a plugin's."""
    return entry.source == "aebench" or entry.source.startswith("aebench.")


def config_defaults(cls: type) -> list[tuple[str, Any]]:
    """(field, default) of a model's Config dataclass, in declaration order; empty when it has none."""
    config = getattr(cls, "Config", None)
    if config is None or not dataclasses.is_dataclass(config):
        return []
    out = []
    for f in dataclasses.fields(config):
        if f.default is not dataclasses.MISSING:
            out.append((f.name, f.default))
        elif f.default_factory is not dataclasses.MISSING:
            out.append((f.name, f.default_factory()))
    return out


def card_problems(cls: type) -> list[str]:
    """What a model's card lacks: empty keys, and Config fields with a numeric default that ``weights`` never
    names (as a word), so a new weight cannot go undocumented."""
    import re

    card = getattr(cls, "card", {}) or {}
    problems = [f"card[{key!r}] is empty" for key in CARD_KEYS if not str(card.get(key) or "").strip()]
    weights = str(card.get("weights") or "")
    for name, value in config_defaults(cls):
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if numeric and not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", weights):
            problems.append(f"card['weights'] does not name {name} (default {value!r})")
    return problems


def _text(s: str) -> str:
    """Markdown-escaped prose (cards write formulas in plain ASCII: |, *, _, ~ and < are literal)."""
    s = str(s).replace("\\", "\\\\")
    for ch in "|*_~<>[]`":
        s = s.replace(ch, "\\" + ch)
    return s


def _code(s: str) -> str:
    s = str(s)
    return f"`` {s} ``" if "`" in s else f"`{s}`"


def _cell(s: str) -> str:
    """A table cell: code spans keep their text, but GFM splits cells at every unescaped pipe."""
    return s.replace("|", "\\|") if s.startswith("`") else s


def _model_section(entry: Any, cls: type) -> list[str]:
    card = getattr(cls, "card", {}) or {}
    lines = [f"### `{entry.name}`", "", _text(entry.description), ""]
    for key in CARD_KEYS:
        value = card.get(key) or "(not stated)"
        shown = _code(value) if key in ("objective", "reduction", "weights") else _text(value)
        lines.append(f"- **{key}:** {shown}")
    params = ", ".join(f"{k}={v!r}" for k, v in config_defaults(cls)) or "none"
    lines += [f"- **params (defaults):** {_code(params)}", ""]
    return lines


def sampler_coverage(model_names: list[str]) -> dict[str, dict[str, str | None]]:
    """For each registered sampler, each model's ``applies_to`` answer (None = it serves the model).

    Real (tiny) models are built, so the answer is what a run would get; the global RNG is left untouched.
    """
    import torch

    from aebench.models.base import build_model
    from aebench.registry import SAMPLERS

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        models = {n: build_model(n, (1, 28, 28), 8, backbone="mlp", backbone_options={"hidden": [16]})
                  for n in model_names}
    out: dict[str, dict[str, str | None]] = {}
    for entry in SAMPLERS.entries():
        sampler = SAMPLERS.get(entry.name)()
        check = getattr(sampler, "applies_to", None)
        out[entry.name] = {n: (check(m) if check else None) for n, m in models.items()}
    return out


def _applies(answers: dict[str, str | None]) -> str:
    served = [n for n, why in answers.items() if why is None]
    refused = {n: why for n, why in answers.items() if why is not None}
    if not refused:
        return "every model"
    if not served:
        return "no built-in model"
    names = ", ".join(f"`{n}`" for n in (served if len(served) <= len(refused) else refused))
    if len(served) <= len(refused):
        return f"only {names}"
    reasons = sorted(set(refused.values()))
    why = f" ({_text(reasons[0])})" if len(reasons) == 1 else ""
    return f"every model but {names}{why}"


def _sampler_table(model_names: list[str], builtin_only: bool) -> list[str]:
    from aebench.registry import SAMPLERS
    from aebench.settings_types import canonical_sampler_options

    coverage = sampler_coverage(model_names)
    lines = ["| sampler | what it draws | options (defaults) | applies to |", "| --- | --- | --- | --- |"]
    for entry in SAMPLERS.entries():
        if builtin_only and not is_builtin(entry):
            continue
        options = ", ".join(f"{k}={v!r}" for k, v in canonical_sampler_options(entry.name, {}).items())
        lines.append(f"| `{entry.name}` | {_text(entry.description)} | {_cell(_code(options)) if options else '-'} "
                     f"| {_applies(coverage[entry.name])} |")
    return lines


def models_markdown(builtin_only: bool = True) -> str:
    """The reference page of every registered model (card, config defaults) and sampler, as markdown.

    ``builtin_only``: aebench's own entries only (docs/models.md), so installed plugins do not change it.
    """
    from aebench.registry import MODELS

    entries = {e.name: e for e in MODELS.entries() if not builtin_only or is_builtin(e)}
    grouped = [(title, blurb, [n for n in names if n in entries]) for title, blurb, names in FAMILIES]
    placed = {n for _, _, names in grouped for n in names}
    rest = [n for n in entries if n not in placed]
    if rest:
        grouped.append(("Other", "registered models in no family yet", rest))
    lines = [
        "# Models and samplers",
        "",
        "<!-- generated by `aebench ls models --markdown` (aebench/docs.py) from each model's `card` and `Config`; "
        "edit those, then regenerate: tests/test_cards.py fails while this file differs -->",
        "",
        "Each model's objective exactly as its code computes it, its weights with their defaults, what is trained "
        "by which optimiser, and the paper; then the samplers. `aebench ls models --details NAME` prints one card. "
        "Set any parameter in a suite with `params:` (`{name: beta-vae, params: {beta: 8}}`).",
        "",
        SCALE_NOTE,
        "",
        "| family | models |",
        "| --- | --- |",
    ]
    for title, _, names in grouped:
        if names:
            lines.append(f"| {title} | {', '.join(f'[`{n}`](#{n})' for n in names)} |")
    lines.append("")
    for title, blurb, names in grouped:
        if not names:
            continue
        lines += [f"## {title}", "", f"{blurb[0].upper()}{blurb[1:]}.", ""]
        for n in names:
            lines += _model_section(entries[n], MODELS.get(n))
    lines += [
        "## Samplers",
        "",
        "How a trained model generates: a suite's `eval.samplers` lists them (options as `{name: gmm, components: "
        "20}`), and each metric that uses samples is computed per sampler. A sampler that does not serve a model "
        "is recorded as not applicable, with its reason. `aebench ls samplers` lists them.",
        "",
        *_sampler_table(list(entries), builtin_only),
        "",
    ]
    return "\n".join(lines)


def print_markdown(kind: str, builtin_only: bool = True) -> int:
    """``aebench ls models --markdown``: print the reference page (docs/models.md is this output)."""
    from aebench.errors import AebenchError

    if kind != "models":
        raise AebenchError("--markdown works with `aebench ls models`")
    print(models_markdown(builtin_only), end="")
    return 0
