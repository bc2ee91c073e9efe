"""Figures owned by metrics: the scatter with 35 models (no overlapping tags, the legend off the data), the new
memorisation, completion and fine-tuning figures from what their metrics keep, and the one aggregation that
the table, the leaderboard and the figures share. Also: keys.py names no metric key and no dataset."""

from __future__ import annotations

import ast
import itertools
import random
from pathlib import Path

import pytest
from test_report import make_job


def _boxes_overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_scatter_with_35_models_has_no_overlapping_tags_and_the_legend_off_the_data() -> None:
    from aebench.report.figures import plt_sns
    from aebench.report.scatter import Point, scatter_figure

    plt, _ = plt_sns()
    rng = random.Random(0)
    points = []
    for i in range(35):  # twenty models crowd one corner, as similar autoencoders do
        x = 0.01 + 0.002 * rng.random() if i < 20 else 0.05 * rng.random()
        for s in ("fid/prior", "fid/gaussian"):
            y = 30 + 5 * rng.random() if i < 20 else 100 * rng.random()
            points.append(Point(f"model-{i:02d}", s, x, y, 0.0005, 1.0))
    fig = scatter_figure(points, {"mnist": points}, "recon/mse", "fid")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    tags = [t for t in ax.texts if t.get_text()]
    assert len(tags) == 70  # one tag per point
    legend = ax.get_legend()
    from matplotlib.text import Text

    text_box = lambda t: Text.get_window_extent(t, renderer)  # noqa: E731 - the text alone, not its leader line
    texts = [text_box(t) for t in tags + list(legend.get_texts())]
    for (i, a), (j, b) in itertools.combinations(enumerate(texts), 2):
        assert not _boxes_overlap(a, b), (i, j, a, b)
    data_area = ax.get_window_extent(renderer)
    assert not _boxes_overlap(legend.get_window_extent(renderer), data_area)
    centres = ax.transData.transform([(p.x, p.y) for p in points])
    for t in tags:  # no tag covers a point
        box = text_box(t)
        assert not any(box.x0 < cx < box.x1 and box.y0 < cy < box.y1 for cx, cy in centres)
    plt.close(fig)


def test_tradeoff_figure_and_table_read_the_same_aggregate(tmp_path: Path, monkeypatch) -> None:
    """35 models in a results folder: the figure's points are the table's means (one aggregation over seeds)."""
    import aebench.report.metric_figures as mf
    from aebench.report.leaderboard import board_of
    from aebench.report.results import load_results
    from aebench.report.table import build_table

    d = tmp_path / "many"
    d.mkdir()
    rng = random.Random(1)
    for i in range(35):
        for seed in (0, 1) if i < 5 else (0,):
            make_job(d, "vae", seed, {"recon/mse": 0.01 + 0.01 * rng.random(), "fid/prior": 30 + 20 * rng.random()},
                     label=f"m{i}", params={"beta": 1 + i}, metrics=[["recon", {}], ["fid", {}]])
    res = load_results(d)
    drawn = []
    monkeypatch.setattr(mf, "save", lambda fig, path: drawn.append(fig) or path)
    assert mf.tradeoff(res, tmp_path / "figs") is not None
    offsets = drawn[0].axes[0].collections[-1].get_offsets()  # the one series' points, in the groups' order
    table = build_table(res, ["recon/mse", "fid/prior"]).rows
    assert [float(v) for o in offsets for v in o] == pytest.approx(
        [v for pair in zip(table["recon/mse mean"], table["fid/prior mean"]) for v in pair])
    board = board_of(res, "fid/prior").sections[0].rows.set_index("model")
    assert [board.loc[m, "mean"] for m in table["label"]] == pytest.approx(list(table["fid/prior mean"]))


def test_memorisation_details_point_at_the_training_images_copied(tmp_path: Path) -> None:
    """A model that returns training images: each example's nearest training image is the sample itself."""
    from test_metrics_new import BankAE, digit_like, make_ctx

    from aebench.metrics.base import evaluate

    train, test = digit_like(200, 7), digit_like(100, 8)
    ctx = make_ctx(BankAE(train), test, train, samplers=("prior",), n_samples=100, cache_dir=tmp_path)
    out = evaluate(ctx, [("memorisation", {"cells": 2, "min_cell_samples": 5, "n_test": 100})])
    ex = out["details"]["memorisation/examples_prior"]
    from aebench.metrics.pixels import unpack

    samples = unpack(ex["samples"])
    assert len(samples) == 8 and ex["distance"] == sorted(ex["distance"])
    for sample, j in zip(samples, ex["train_index"]):
        assert train[j].tolist() == sample.tolist()


def test_completion_details_keep_the_examples() -> None:
    import numpy as np
    import torch
    from test_metrics_new import IdentityAE, digit_like, make_ctx

    from aebench.metrics.base import evaluate

    x = digit_like(20, 3)
    ex = evaluate(make_ctx(IdentityAE(), x, batch_size=16), [("completion", {"steps": 2})])["details"][
        "completion/examples"]
    from aebench.metrics.pixels import unpack

    assert ex["index"] == list(range(8)) and [t.tolist() for t in unpack(ex["truth"])] == x[:8].tolist()
    masked = torch.tensor(np.stack(unpack(ex["masked"])), dtype=torch.uint8)
    assert (masked[:, :, 14:] == 0).all() and torch.equal(masked[:, :, :14], x[:8, :, :14])
    assert ex["masked_iterated"] == ex["masked"] and ex["sp_onepass"] == ex["sp"]  # the identity changes nothing


def test_example_pixels_are_a_png_under_half_their_raw_size_and_old_payloads_compact_to_it(mnist_root) -> None:
    """Real MNIST digits: the packed PNG's base64 is under half the raw bytes (the previous format was 4/3 of
    them), the pixels come back exactly, an old payload compacts to the same, and ``drop`` keeps the rest."""
    import base64

    import numpy as np

    from aebench.data import load
    from aebench.metrics.pixels import compact, drop, pack, unpack

    x = load("mnist", "test", mnist_root, download=False).images[:8]
    packed = pack(x)
    assert len(packed["png_b64"]) < 0.5 * x.numel() and np.array_equal(np.stack(unpack(packed)), x.numpy())
    rgb = np.random.default_rng(0).integers(0, 256, (3, 3, 5, 7), dtype=np.uint8)
    assert np.array_equal(np.stack(unpack(pack(rgb))), rgb)  # any channel count, lossless
    old = {"m/examples": {"samples": {"shape": list(x.shape), "uint8_b64": base64.b64encode(x.numpy().tobytes())
                                      .decode()}, "train_index": [1, 2]}, "m/setup": {"n": 8}}
    assert compact(old) and old["m/examples"]["samples"] == packed and not compact(old)
    assert drop(old) and old == {"m/examples": {"train_index": [1, 2]}, "m/setup": {"n": 8}}


def test_memorisation_and_completion_figures_draw_what_the_metrics_keep(tmp_path: Path, monkeypatch) -> None:
    import aebench.report.image_figures as imf
    from aebench.data import load
    from aebench.report.results import load_results

    train = load("synthetic", "train", download=False)
    d = tmp_path / "img"
    d.mkdir()
    idx = [5, 17, 300]
    copies = [train.images[i].tolist() for i in idx]
    blank = [[[0] * 12 for _ in range(12)]]
    for model, copied in (("ae", 0.5), ("vae", 0.0)):
        details = {"memorisation/examples_prior": {"samples": copies, "train_index": idx, "distance": [0.0, 0.1, 9]},
                   "memorisation/examples_gaussian": {"samples": [blank], "train_index": [0], "distance": [5.0]},
                   "memorisation/setup": {"threshold": 1.0},
                   "completion/examples": {"index": [0], "truth": [blank], "masked": [blank],
                                           "masked_iterated": [blank], "sp": [blank], "sp_onepass": [blank]}}
        make_job(d, model, 0, {"memorisation/copied_prior": copied, "memorisation/copied_gaussian": 0.1,
                               "completion/sp_mse_onepass": 0.1}, details=details,
                 metrics=[["memorisation", {}], ["completion", {}]])
    tiled = []
    real_tile = imf.tile
    monkeypatch.setattr(imf, "tile", lambda rows: tiled.append(rows) or real_tile(rows))
    res = load_results(d)
    fig = imf.memorisation(res, tmp_path / "figs")
    assert fig is not None and fig.path.is_file()
    # ae: the prior sampler copies most (0.5 > 0.1), its samples sit above the training images redrawn by index
    samples, neighbours = tiled[0]
    assert [s.tolist() for s in samples] == [n.tolist() for n in neighbours]
    assert len(tiled[1][0]) == 1  # vae: the gaussian sampler's (0.1 > 0.0) one example
    assert imf.completion(res, tmp_path / "figs").path.is_file()
    assert len(tiled[2]) == 5  # truth, masked, completed, salt and pepper, completed


def test_finetune_figure_plots_accuracy_against_labels(tmp_path: Path, monkeypatch) -> None:
    import aebench.report.metric_figures as mf
    from aebench.report.results import load_results

    d = tmp_path / "ft"
    d.mkdir()
    for seed in (0, 1):
        make_job(d, "ae", seed, {"finetune/acc_pretrained_100": 0.8 + 0.02 * seed, "finetune/acc_random_100": 0.5,
                                 "finetune/acc_pretrained_1000": 0.9, "finetune/acc_random_1000": 0.85 + 0.01 * seed},
                 metrics=[["finetune", {}]])
    drawn = []
    monkeypatch.setattr(mf, "save", lambda fig, path: drawn.append(fig) or path)
    assert mf.finetune(load_results(d), tmp_path) is not None
    lines = {ln.get_linestyle(): ln for ln in drawn[0].axes[0].lines if len(ln.get_xdata()) == 2}
    assert list(lines["-"].get_xdata()) == [100, 1000] and list(lines["-"].get_ydata()) == pytest.approx([0.81, 0.9])
    assert list(lines["--"].get_ydata()) == pytest.approx([0.5, 0.855])


def test_keys_module_names_no_metric_key_nor_dataset() -> None:
    import aebench.catalog  # noqa: F401 - the built-in registrations
    from aebench.registry import DATASETS, METRICS
    from aebench.report import keys

    tree = ast.parse(Path(keys.__file__).read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.FunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr)}
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
               and id(n) not in docstrings]
    names = set(METRICS.names()) | set(DATASETS.names())
    found = [s for s in strings if s.split("/")[0] in names or any(s.startswith(f"{m}/") for m in METRICS.names())]
    assert found == []


def test_curves_with_many_models_draw_one_panel_per_model(tmp_path: Path, monkeypatch) -> None:
    """Past eight models one line per model is unreadable: each model gets its own panel and scale."""
    import aebench.report.figures as figs
    from aebench.report.results import load_results

    d = tmp_path / "many"
    d.mkdir()
    for i in range(10):
        for seed in (0, 1):
            make_job(d, "ae", seed, {"recon/mse": 0.01}, label=f"m{i}", params={"lam": i}, epochs=3)
    drawn = []
    monkeypatch.setattr(figs, "save", lambda fig, path: drawn.append(fig) or path)
    fig = figs.curves(load_results(d), tmp_path / "figs")
    assert fig is not None and "one panel per model" in fig.caption
    titles = [ax.get_title() for ax in drawn[0].axes if ax.get_title()]
    assert titles == [f"m{i}" for i in range(10)]
    line = drawn[0].axes[0].get_lines()[0]  # m0's loss: the mean over seeds 0 and 1 of make_job's 100 + seed - 3e
    assert list(line.get_ydata()) == pytest.approx([100.5 - 3 * e for e in (1, 2, 3)])
