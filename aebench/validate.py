"""``aebench validate``: every name of a suite against its registry and every setting against what it accepts,
before anything trains. Errors name the field; the suite loader adds the file."""

from __future__ import annotations

from typing import Any

from aebench.config import from_dict
from aebench.errors import AebenchError, SuiteError
from aebench.registry import REGISTRIES, check_name
from aebench.specs import TrainSpec
from aebench.suite import Suite, _grid_points


def validate(suite: Suite) -> None:
    """Check every name against its registry and every setting against what it accepts."""
    import inspect

    def known(kind: str, name: str, where: str) -> str:
        try:
            return REGISTRIES[kind].canonical(name)
        except AebenchError as e:
            raise SuiteError(None, where, str(e)) from None

    for i, ds in enumerate(suite.datasets):
        ds.name = known("datasets", ds.name, f"datasets[{i}].name")
    suite.backbone.name = known("backbones", suite.backbone.name, "backbone.name")
    suite.likelihood.name = known("likelihoods", suite.likelihood.name, "likelihood.name")
    for i, s in enumerate(suite.eval.samplers):
        s.name = known("samplers", s.name, f"eval.samplers[{i}].name")
    samplers = [s.name for s in suite.eval.samplers]
    dup = next((n for n in samplers if samplers.count(n) > 1), None)
    if dup:
        raise SuiteError(None, "eval.samplers", f"sampler {dup!r} listed twice (its results are keyed by its name)")
    suite.launcher.name = known("launchers", suite.launcher.name, "launcher.name")
    for i, m in enumerate(suite.metrics):
        m.name = known("metrics", m.name, f"metrics[{i}].name")
    names = [m.name for m in suite.metrics]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise SuiteError(None, "metrics", f"metric {dup!r} listed twice")
    for i, m in enumerate(suite.metrics):
        if "labels" not in REGISTRIES["metrics"].meta(m.name).get("needs", ()):
            continue
        for j, ds in enumerate(suite.datasets):  # meta labels=False: known to have none (None: unknown)
            if REGISTRIES["datasets"].meta(ds.name).get("labels") is False:
                raise SuiteError(None, f"metrics[{i}].name", f"metric {m.name!r} needs class labels, but dataset "
                                 f"{ds.name!r} (datasets[{j}]) has none; allowed: labelled datasets, or drop the "
                                 "metric (`aebench ls metrics` shows what each needs)")
    for i, spec in enumerate(suite.models):
        spec.name = known("models", spec.name, f"models[{i}].name")
        if spec.label is not None:
            try:
                check_name(spec.label.replace("[", "").replace("]", ""), "label")
            except AebenchError as e:
                raise SuiteError(None, f"models[{i}].label", str(e)) from None
    labels = [label for spec in suite.models for _, label in _grid_points(spec)]
    dup = next((n for n in labels if labels.count(n) > 1), None)
    if dup:
        raise SuiteError(None, "models", f"model {dup!r} listed twice; give one entry a 'label' or use 'grid'")

    # settings that need the implementations: import them now, before anything trains
    from aebench.models.base import model_config
    from aebench.settings_types import check_settings

    for i, spec in enumerate(suite.models):
        for params, _ in _grid_points(spec):
            model_config(spec.name, params, f"models[{i}].params")
    _check_tuning(suite)
    check_settings("likelihoods", suite.likelihood.name, suite.likelihood.options, "likelihood")
    for i, s in enumerate(suite.eval.samplers):
        check_settings("samplers", s.name, s.options, f"eval.samplers[{i}]")
        _construct(REGISTRIES["samplers"].get(s.name), s.options, f"eval.samplers[{i}]")
    for i, m in enumerate(suite.metrics):
        check_settings("metrics", m.name, m.options, f"metrics[{i}]")
    from aebench.metrics.base import check_metric_dependencies

    for i, m in enumerate(suite.metrics):
        check_metric_dependencies(m.name, m.options, f"metrics[{i}]")
    from aebench.registry import BACKBONES, LAUNCHERS

    check_settings("launchers", suite.launcher.name, suite.launcher.options, "launcher")
    _construct(LAUNCHERS.get(suite.launcher.name), suite.launcher.options, "launcher")
    accepted = set(inspect.signature(BACKBONES.get(suite.backbone.name)).parameters) - {
        "image_shape", "enc_out", "latent_dim"}
    for key in suite.backbone.options:
        if key not in accepted:
            raise SuiteError(None, f"backbone.{key}", f"unknown option of backbone {suite.backbone.name!r}; "
                             f"allowed: {', '.join(sorted(accepted))}")


def _check_tuning(suite: Suite) -> None:
    """Every trial's params and training settings are valid, and the selection key is a known, directed metric."""
    from dataclasses import asdict

    from aebench.models.base import model_config
    from aebench.registry import METRICS, metric_direction
    from aebench.tuning import entry_points, split_point

    for i, spec in enumerate(suite.models):
        if not suite.tuned(spec):
            continue
        model_config(spec.name, spec.params, f"models[{i}].params")  # trial 0's values come from these
        points = entry_points(suite, spec)
        for t, point in enumerate(points):
            params, train = split_point(point)
            model_config(spec.name, {**spec.params, **params}, f"models[{i}].search (trial {t})")
            from_dict(TrainSpec, {**asdict(suite.train), **train}, f"models[{i}].search (trial {t})")
    if suite.tune.trials:
        name = suite.tune.metric.split("/")[0]
        try:
            METRICS.canonical(name)
        except AebenchError as e:
            raise SuiteError(None, "tune.metric", str(e)) from None
        if metric_direction(suite.tune.metric) is None:
            raise SuiteError(None, "tune.metric", f"{suite.tune.metric!r} has no registered direction (which way is "
                             "better); choose a key such as recon/mse or fid/gmm")
        for ds in suite.datasets:
            if suite.val_size(ds) <= 0:
                raise SuiteError(None, "data.val", f"tuning selects on the validation split, but dataset {ds.name!r} "
                                 "has none; set data.val > 0")
    for ds in suite.datasets:
        need = suite.train.needs_validation
        if need and suite.val_size(ds) <= 0:
            raise SuiteError(None, f"train.{need}", f"needs a validation split, but dataset {ds.name!r} has none; "
                             "set data.val > 0")


def _construct(cls: Any, options: dict[str, Any], where: str) -> Any:
    """Build a part from its options to run its own value checks (side-effect free by contract)."""
    try:
        return cls(**options)
    except SuiteError:
        raise
    except (AebenchError, TypeError, ValueError) as e:
        raise SuiteError(None, where, str(e)) from None


