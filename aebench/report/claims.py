"""The lecture's claims, checked by this run's numbers: each claim is a stated rule over the aggregated
per-seed values (``res.aggregate()``), judged seed by seed, never written by hand.

Models are found by their registered name within one dataset and protocol (the label equal to the name if
there is one, else the first label of that model); seeds are paired by number. A claim is *supported* when
every paired seed supports it, *not supported* when none does, *mixed* otherwise, and *not tested here*
(with what is missing) when its models or metrics are not in the results. Two entries are measurements
rather than claims (the best autoencoder's sample FID against the DCGAN's; the RBM's NLL beside the VAE's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aebench.report.aggregate import Group, Stat
from aebench.report.results import Results
from aebench.report.table import fmt

SUPPORTED, NOT_SUPPORTED, NOT_TESTED, MEASURED = "supported", "not supported", "not tested here", "measured"
FAR = 2.0  # "far worse": the AE's prior-sample FID at least this many times its ex-post GMM's
NOT_AUTOENCODERS = ("dcgan", "rbm", "hopfield")  # models left out of "the best autoencoder"


class Missing(Exception):
    """What a claim needs and the results lack."""


@dataclass
class SeedResult:
    seed: int
    verdict: str  # SUPPORTED, NOT_SUPPORTED or MEASURED
    numbers: str


@dataclass
class Checked:
    claim: Claim
    where: str  # the dataset (and protocol where several)
    verdict: str
    seeds: list[SeedResult] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """The verdict with its seed count: 'supported (3 of 3 seeds)', 'mixed (1 of 3 seeds)', ..."""
        if self.verdict in (NOT_TESTED, MEASURED):
            return self.verdict + (f" ({len(self.seeds)} seeds)" if self.seeds else "")
        k = sum(s.verdict == SUPPORTED for s in self.seeds)
        return f"{self.verdict} ({k} of {len(self.seeds)} seeds)"


class Block:
    """The groups of one dataset and protocol: what a claim is judged on."""

    def __init__(self, res: Results, groups: list[Group], where: str):
        self.res, self.groups, self.where = res, groups, where

    def model(self, *names: str) -> Group:
        """The first of ``names`` present: its label equal to the name, else the first label of that model."""
        for name in names:
            found = [g for g in self.groups if name in g.model.split(", ")]
            if found:
                return next((g for g in found if g.label == name), found[0])
        raise Missing(f"model {' or '.join(names)}")

    @staticmethod
    def stat(g: Group, key: str) -> Stat:
        st = g.stat(key)
        if not st.n:
            raise Missing(f"{key} of {g.label}")
        return st

    def sample_keys(self, g: Group, metric: str, prefix: str = "") -> list[str]:
        """``<metric>/<prefix><sampler>`` keys with values, for each sampler the group's jobs drew from."""
        samplers = dict.fromkeys(s for j in g.job_ids for s in self.res.samplers(j))
        return [k for k in (f"{metric}/{prefix}{s}" for s in samplers) if g.stat(k).n]


def paired(*stats: Stat) -> list[tuple[int, list[float]]]:
    """(seed, values) for the seeds every stat has, in seed order."""
    maps = [s.by_seed() for s in stats]
    common = sorted(set.intersection(*(set(m) for m in maps)))
    if not common:
        raise Missing("a seed shared by the models compared")
    return [(seed, [m[seed] for m in maps]) for seed in common]


def verdict(ok: bool) -> str:
    return SUPPORTED if ok else NOT_SUPPORTED


# -- the claims ---------------------------------------------------------------------------------------------
def active_units(b: Block) -> list[SeedResult]:
    vae = b.model("vae")
    st = b.stat(vae, "active_units/count")
    dims = {s: (b.res.configs.get(j) or {}).get("latent_dim") for s, j in zip(vae.seeds, vae.job_ids)}
    out = []
    for seed, (count,) in paired(st):
        d = dims.get(seed)
        if not isinstance(d, int):
            raise Missing(f"latent_dim of {vae.label} (config.json)")
        out.append(SeedResult(seed, verdict(count < d), f"{vae.label}: {fmt(count)} of {d} dimensions active"))
    return out


def _ratios(b: Block, g: Group) -> list[str]:
    keys = ["sharpness/ratio_recon", "sharpness/ratio_prior"]
    for k in keys:
        b.stat(g, k)
    return keys


def blurrier_than_data(b: Block) -> list[SeedResult]:
    vae = b.model("vae")
    keys = _ratios(b, vae)
    return [SeedResult(seed, verdict(all(v < 1 for v in vals)),
                       f"{vae.label}: " + ", ".join(f"{k.split('_', 1)[1]} {fmt(v)}" for k, v in zip(keys, vals)))
            for seed, vals in paired(*(vae.stat(k) for k in keys))]


def blurrier_than_wae(b: Block) -> list[SeedResult]:
    vae, wae = b.model("vae"), b.model("wae-mmd", "wae-gan")
    keys = _ratios(b, vae)
    _ratios(b, wae)
    out = []
    for seed, vals in paired(*(vae.stat(k) for k in keys), *(wae.stat(k) for k in keys)):
        v, w = vals[: len(keys)], vals[len(keys):]
        text = ", ".join(f"{k.split('_', 1)[1]} {fmt(a)} vs {fmt(c)}" for k, a, c in zip(keys, v, w))
        out.append(SeedResult(seed, verdict(all(a < c for a, c in zip(v, w))), f"{vae.label} vs {wae.label}: {text}"))
    return out


def wae_samples_better(b: Block) -> list[SeedResult]:
    vae, wae = b.model("vae"), b.model("wae-mmd", "wae-gan")
    k = "fid/prior"
    return [SeedResult(seed, verdict(w < v), f"{k}: {wae.label} {fmt(w)}, {vae.label} {fmt(v)}")
            for seed, (w, v) in paired(b.stat(wae, k), b.stat(vae, k))]


def ae_prior_far_worse(b: Block) -> list[SeedResult]:
    ae = b.model("ae")
    out = []
    for seed, (p, g) in paired(b.stat(ae, "fid/prior"), b.stat(ae, "fid/gmm")):
        times = f" ({fmt(p / g, 3)}x)" if g > 0 else ""
        out.append(SeedResult(seed, verdict(p >= FAR * g), f"{ae.label}: fid/prior {fmt(p)}, fid/gmm {fmt(g)}{times}"))
    return out


def kl_not_w2(b: Block) -> list[SeedResult]:
    models = [g for g in b.groups if g.stat("kl_w2/kl").n and g.stat("kl_w2/w2").n]
    if len(models) < 2:
        raise Missing("kl_w2/kl and kl_w2/w2 of at least two models")
    seeds = sorted(set().union(*(set(g.stat("kl_w2/kl").seeds) for g in models)))
    out = []
    for seed in seeds:
        pts = [(g.label, g.stat("kl_w2/kl").by_seed().get(seed), g.stat("kl_w2/w2").by_seed().get(seed))
               for g in models]
        pts = [p for p in pts if p[1] is not None and p[2] is not None]
        if len(pts) < 2:
            continue
        # the discordant pair with the largest W2 gap: a smaller KL beside a larger W2
        pairs = [(w2a - w2b, a, b_) for a, kla, w2a in pts for b_, klb, w2b in pts if kla < klb and w2a > w2b]
        if pairs:
            _, a, c = max(pairs)
            pa, pc = next(p for p in pts if p[0] == a), next(p for p in pts if p[0] == c)
            text = (f"{a}: KL {fmt(pa[1])} < {c}: KL {fmt(pc[1])}, yet W2 {fmt(pa[2])} > {fmt(pc[2])}")
        else:
            text = f"KL and W2 order the {len(pts)} models alike"
        out.append(SeedResult(seed, verdict(bool(pairs)), text))
    if not out:
        raise Missing("a seed with kl_w2 values of two models")
    return out


def denoising_better(b: Block) -> list[SeedResult]:
    dae, ae = b.model("denoising-ae"), b.model("ae")
    keys = [k for k in ("completion/sp_mse_onepass", "completion/masked_mse_onepass")
            if dae.stat(k).n and ae.stat(k).n]
    if not keys:
        raise Missing(f"completion/sp_mse_onepass or completion/masked_mse_onepass of {dae.label} and {ae.label}")
    k = keys[0]
    return [SeedResult(seed, verdict(d < a), f"{k}: {dae.label} {fmt(d)}, {ae.label} {fmt(a)}")
            for seed, (d, a) in paired(dae.stat(k), ae.stat(k))]


def gan_gap(b: Block) -> list[SeedResult]:
    gan = b.model("dcgan")
    gan_st = b.stat(gan, "fid/prior")
    best = [(g.stat(k).mean, g.label, k, g) for g in b.groups if not set(g.model.split(", ")) & set(NOT_AUTOENCODERS)
            for k in b.sample_keys(g, "fid")]
    if not best:
        raise Missing("sample FID (fid/<sampler>) of an autoencoder")
    _, label, key, g = min(best, key=lambda t: t[:3])
    out = []
    for seed, (a, d) in paired(g.stat(key), gan_st):
        times = f", {fmt(a / d, 3)}x" if d > 0 else ""
        out.append(SeedResult(seed, MEASURED, f"best autoencoder {label} {key} {fmt(a)}, {gan.label} fid/prior "
                              f"{fmt(d)}: {fmt(a - d, 3)} apart{times}"))
    return out


def rbm_nll(b: Block) -> list[SeedResult]:
    rbm, vae = b.model("rbm"), b.model("vae")
    k = "nll/nats"
    return [SeedResult(seed, MEASURED, f"{k}: {rbm.label} {fmt(r)}, {vae.label} {fmt(v)} (difference {fmt(r - v, 3)})")
            for seed, (r, v) in paired(b.stat(rbm, k), b.stat(vae, k))]


@dataclass
class Claim:
    id: str
    statement: str
    rule: str
    check: Callable[[Block], list[SeedResult]]
    kind: str = "claim"  # or "measure": numbers side by side, no verdict


CLAIMS = [
    Claim("active-units", "The VAE uses fewer latent dimensions than it has.",
          "active_units/count (dimensions whose posterior mean varies over the test set by more than the "
          "threshold) < latent_dim, for the vae", active_units),
    Claim("vae-blurrier-than-data", "The VAE's samples and reconstructions are blurrier than the data.",
          "sharpness/ratio_recon < 1 and sharpness/ratio_prior < 1 for the vae (sharpness relative to the test "
          "images')", blurrier_than_data),
    Claim("vae-blurrier-than-wae", "The VAE's samples and reconstructions are blurrier than a WAE's.",
          "the vae's sharpness/ratio_recon and sharpness/ratio_prior both below the wae-mmd's (else wae-gan's)",
          blurrier_than_wae),
    Claim("wae-samples-better", "The WAE's samples are better than the VAE's.",
          "fid/prior of the wae-mmd (else wae-gan) < fid/prior of the vae", wae_samples_better),
    Claim("ae-prior-far-worse", "The AE's samples from N(0, I) are far worse than from an ex-post GMM "
          "(Ghosh et al. 2020, Table 1).", f"fid/prior >= {FAR:g} x fid/gmm, for the ae", ae_prior_far_worse),
    Claim("kl-not-w2", "A small KL does not mean a small W2 (the lecture's KL-against-W2 slide).",
          "some pair of models has kl_w2/kl(a) < kl_w2/kl(b) but kl_w2/w2(a) > kl_w2/w2(b)", kl_not_w2),
    Claim("denoising-completes", "The denoising AE reconstructs corrupted inputs better than the plain AE.",
          "completion/sp_mse_onepass (else completion/masked_mse_onepass) of the denoising-ae < the ae's",
          denoising_better),
    Claim("gan-gap", "How far the best autoencoder's sample FID is from the DCGAN's.",
          "the autoencoder and sampler with the lowest mean fid/<sampler> (not dcgan, rbm, hopfield) against the "
          "dcgan's fid/prior", gan_gap, kind="measure"),
    Claim("rbm-nll", "The RBM's NLL beside the VAE's.", "nll/nats of the rbm and of the vae (nats per image; "
          "the rbm's by AIS, the vae's by importance sampling)", rbm_nll, kind="measure"),
]


def blocks(res: Results) -> list[Block]:
    """One block per dataset and protocol, in the order of the aggregate."""
    found: dict[tuple[str, str], list[Group]] = {}
    for g in res.aggregate():
        found.setdefault((g.dataset, g.protocol), []).append(g)
    many = len({p for _, p in found}) > 1
    return [Block(res, gs, f"{ds} ({p[:12]})" if many else ds) for (ds, p), gs in found.items()]


def check_claims(res: Results, claims: list[Claim] | None = None) -> list[Checked]:
    """Every claim on every dataset and protocol; one 'not tested here' entry when no block can test it."""
    out = []
    bs = blocks(res)
    for claim in CLAIMS if claims is None else claims:
        tested, missing = [], []
        for b in bs:
            try:
                seeds = claim.check(b)
            except Missing as m:
                missing.append((b.where, str(m)))
                continue
            if claim.kind == "measure":
                v = MEASURED
            else:
                k = sum(s.verdict == SUPPORTED for s in seeds)
                v = SUPPORTED if k == len(seeds) else NOT_SUPPORTED if k == 0 else "mixed"
            tested.append(Checked(claim, b.where, v, seeds))
        if tested:
            out += tested + [Checked(claim, w, NOT_TESTED, missing=[m]) for w, m in missing]
        else:
            lacks = list(dict.fromkeys(m for _, m in missing)) or ["finished jobs"]
            out.append(Checked(claim, ", ".join(dict.fromkeys(w for w, _ in missing)) or "-", NOT_TESTED,
                               missing=lacks))
    return out
