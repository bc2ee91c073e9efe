"""The claims section and the noise-aware leaderboard, on hand-made results folders (``make_job``).

Each claim is checked where this run's numbers support it, where they do not, where seeds disagree, and
where its models or metrics are missing; Welch's test and the rank intervals are checked against scipy and
against the Welch-Satterthwaite formula written out.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from test_report import make_job

METRICS = [["recon", {}], ["fid", {}], ["kl_w2", {}], ["active_units", {}], ["sharpness", {}], ["nll", {}],
           ["completion", {}]]


def lecture_results(root: Path, flip: bool = False, mixed: bool = False) -> Path:
    """vae, wae-mmd, ae, denoising-ae, dcgan and rbm over three seeds; ``flip`` turns every claim's numbers
    against it; ``mixed`` turns them against it on seed 2 only."""
    d = root / ("flipped" if flip else "mixed" if mixed else "lecture")
    d.mkdir(parents=True)
    for seed in range(3):
        bad = flip or (mixed and seed == 2)
        e = 0.01 * seed  # seeds differ a little
        vals = {
            "vae": {"active_units/count": 4.0 if bad else 2.0, "sharpness/ratio_recon": (1.2 if bad else 0.5) + e,
                    "sharpness/ratio_prior": (1.1 if bad else 0.4) + e, "fid/prior": (30.0 if bad else 60.0) + e,
                    "kl_w2/kl": 0.5 + e, "kl_w2/w2": (0.4 if bad else 3.0) + e, "nll/nats": 90.0 + seed},
            "wae-mmd": {"sharpness/ratio_recon": 0.8 + e, "sharpness/ratio_prior": 0.7 + e, "fid/prior": 40.0 + e,
                        "kl_w2/kl": 5.0 + e, "kl_w2/w2": 0.5 + e},
            "ae": {"fid/prior": (50.0 if bad else 120.0) + e, "fid/gmm": 30.0 + e, "fid/gaussian": 35.0 + e,
                   "completion/sp_mse_onepass": 0.1 + e, "completion/masked_mse_onepass": 0.2},
            "denoising-ae": {"completion/sp_mse_onepass": (0.2 if bad else 0.05) + e, "fid/gaussian": 50.0},
            "dcgan": {"fid/prior": 20.0 + seed},
            "rbm": {"nll/nats": 100.0 + 2 * seed},
        }
        for model, v in vals.items():
            make_job(d, model, seed, v, metrics=METRICS)
    return d


def checked(d: Path) -> dict:
    from aebench.report.claims import check_claims
    from aebench.report.results import load_results

    out = check_claims(load_results(d))
    assert len({c.claim.id for c in out}) == len(out), "one entry per claim on a single dataset"
    return {c.claim.id: c for c in out}


CLAIMS = ["active-units", "vae-blurrier-than-data", "vae-blurrier-than-wae", "wae-samples-better",
          "ae-prior-far-worse", "kl-not-w2", "denoising-completes"]


def test_every_claim_supported_with_its_numbers(tmp_path: Path) -> None:
    c = checked(lecture_results(tmp_path))
    for cid in CLAIMS:
        assert c[cid].summary == "supported (3 of 3 seeds)", (cid, c[cid].seeds)
    assert c["active-units"].seeds[0].numbers == "vae: 2 of 4 dimensions active"
    assert c["wae-samples-better"].seeds[1].numbers == "fid/prior: wae-mmd 40.01, vae 60.01"
    assert c["ae-prior-far-worse"].seeds[0].numbers == "ae: fid/prior 120, fid/gmm 30 (4x)"
    assert c["kl-not-w2"].seeds[0].numbers == "vae: KL 0.5 < wae-mmd: KL 5, yet W2 3 > 0.5"
    assert c["denoising-completes"].seeds[0].numbers == "completion/sp_mse_onepass: denoising-ae 0.05, ae 0.1"
    assert c["vae-blurrier-than-wae"].seeds[0].numbers == ("vae vs wae-mmd: recon 0.5 vs 0.8, prior 0.4 vs 0.7")
    # measurements: the best autoencoder's sample FID (ae with the gaussian sampler, 35) against the DCGAN's
    assert c["gan-gap"].verdict == "measured"
    assert c["gan-gap"].seeds[0].numbers == "best autoencoder ae fid/gaussian 35, dcgan fid/prior 20: 15 apart, 1.75x"
    assert c["rbm-nll"].seeds[2].numbers == "nll/nats: rbm 104, vae 92 (difference 12)"


def test_every_claim_fails_with_its_numbers(tmp_path: Path) -> None:
    c = checked(lecture_results(tmp_path, flip=True))
    for cid in CLAIMS:
        assert c[cid].summary == "not supported (0 of 3 seeds)", (cid, c[cid].seeds)
        assert all(s.verdict == "not supported" and s.numbers for s in c[cid].seeds)
    assert c["active-units"].seeds[0].numbers == "vae: 4 of 4 dimensions active"
    assert c["ae-prior-far-worse"].seeds[0].numbers == "ae: fid/prior 50, fid/gmm 30 (1.67x)"  # < 2x: not far
    assert c["kl-not-w2"].seeds[0].numbers == "KL and W2 order the 2 models alike"
    assert c["wae-samples-better"].seeds[0].numbers == "fid/prior: wae-mmd 40, vae 30"


def test_claims_judged_per_seed(tmp_path: Path) -> None:
    c = checked(lecture_results(tmp_path, mixed=True))
    for cid in CLAIMS:
        assert c[cid].summary == "mixed (2 of 3 seeds)", cid
        assert [s.verdict for s in c[cid].seeds] == ["supported", "supported", "not supported"]


def test_claims_not_tested_say_what_is_missing(tmp_path: Path) -> None:
    from aebench.report.html_report import claims_html
    from aebench.report.markdown_report import claims_markdown

    d = tmp_path / "few"
    d.mkdir()
    make_job(d, "ae", 0, {"fid/prior": 80.0, "recon/mse": 0.1}, metrics=METRICS)
    make_job(d, "vae", 1, {"fid/prior": 60.0, "active_units/count": 3.0}, metrics=METRICS)
    make_job(d, "wae-mmd", 2, {"fid/prior": 50.0}, metrics=METRICS)  # no seed shared with the vae
    c = checked(d)
    assert c["active-units"].summary == "supported (1 of 1 seeds)"
    expect = {"vae-blurrier-than-data": "sharpness/ratio_recon of vae", "vae-blurrier-than-wae":
              "sharpness/ratio_recon of vae", "wae-samples-better": "a seed shared by the models compared",
              "ae-prior-far-worse": "fid/gmm of ae", "kl-not-w2": "kl_w2/kl and kl_w2/w2 of at least two models",
              "denoising-completes": "model denoising-ae", "gan-gap": "model dcgan", "rbm-nll": "model rbm"}
    for cid, missing in expect.items():
        assert c[cid].verdict == "not tested here" and c[cid].missing == [missing], (cid, c[cid].missing)
    md = "\n".join(claims_markdown(list(c.values())))
    assert "- **not tested here**: The RBM's NLL beside the VAE's. _(synthetic)_" in md
    assert "  Missing: model rbm." in md and "  - seed 1: supported: vae: 3 of 4 dimensions active" in md
    html = "\n".join(claims_html(list(c.values())))
    assert 'id="claim-active-units"><span class="verdict ok">supported (1 of 1 seeds)</span>' in html
    assert "Missing: model denoising-ae." in html


# -- the leaderboard's noise-aware ranks ----------------------------------------------------------------------
def welch_by_hand(a: list[float], b: list[float]) -> float:
    """Welch's two-sided p-value written out: t on the Welch-Satterthwaite degrees of freedom."""
    from scipy.stats import t as student

    va, vb = (sum((x - sum(s) / len(s)) ** 2 for x in s) / (len(s) - 1) / len(s) for s in (a, b))
    t = (sum(a) / len(a) - sum(b) / len(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return 2 * student.sf(abs(t), df)


def test_welch_p_equals_scipy_and_the_formula() -> None:
    from scipy.stats import ttest_ind

    from aebench.report.aggregate import stat_of
    from aebench.report.leaderboard import welch_p

    a, b = [1.0, 2.0, 3.0, 4.5], [4.0, 5.0, 6.5]
    p = welch_p(stat_of(range(4), a), stat_of(range(3), b))
    assert p == pytest.approx(ttest_ind(a, b, equal_var=False).pvalue, rel=1e-12)
    assert p == pytest.approx(welch_by_hand(a, b), rel=1e-9)
    assert math.isnan(welch_p(stat_of([0], [1.0]), stat_of(range(3), b)))  # one seed: cannot be told apart
    assert welch_p(stat_of([0, 1], [2.0, 2.0]), stat_of([0, 1], [3.0, 3.0])) == 0.0


def test_rank_intervals_share_ranks_within_noise(tmp_path: Path) -> None:
    from scipy.stats import ttest_ind
    from test_leaderboard import read_csv

    from aebench.report.leaderboard import build_leaderboard

    seeds = {"a": [1.0, 1.1, 0.9], "b": [1.05, 1.2, 0.95], "c": [3.0, 3.1, 2.9], "d": [3.05, 2.95, 3.2]}
    d = tmp_path / "noise"
    d.mkdir()
    models = {"a": "ae", "b": "vae", "c": "rae", "d": "wae-mmd", "e": "sparse-ae"}
    for label, vals in seeds.items():
        for s, v in enumerate(vals):
            make_job(d, models[label], s, {"recon/mse": v}, label=label, metrics=[["recon", {}]])
    make_job(d, "sparse-ae", 0, {"recon/mse": 2.0}, label="e", metrics=[["recon", {}]])  # one seed
    build_leaderboard(d, "recon/mse")
    rows = {r["model"]: r for r in read_csv(d / "leaderboard.csv")}
    # a, b and c, d are within noise of each other, far from the other pair; e (one seed) is never told apart
    # from anyone, so every range reaches across it
    assert {m: (r["rank"], r["rank_lo"], r["rank_hi"]) for m, r in rows.items()} == {
        "a": ("1", "1", "3"), "b": ("2", "1", "3"), "e": ("3", "1", "5"), "c": ("4", "3", "5"), "d": ("5", "3", "5")}
    assert float(rows["a"]["p_next"]) == pytest.approx(ttest_ind(seeds["a"], seeds["b"], equal_var=False).pvalue)
    assert rows["b"]["p_next"] == "" and rows["d"]["p_next"] == ""  # the next is e (one seed), d is last
    assert float(rows["c"]["p_next"]) == pytest.approx(ttest_ind(seeds["c"], seeds["d"], equal_var=False).pvalue)
    md = (d / "leaderboard.md").read_text()
    assert "| 1 | 1–3 | a | synthetic |" in md and "| 3 | 1–5 | e | synthetic |" in md
