"""Suite files: YAML read with ``yaml.safe_load`` into typed dataclasses, validated, expanded to jobs.

A suite is data, never code. Loading one applies ``--set`` overrides, loads its plugins, checks every
name against the registries and every setting against its model, metric or backbone, all before
anything trains. Every error names the file, the field path and what is allowed.
"""

from __future__ import annotations

import copy
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aebench.config import from_dict, unknown_field
from aebench.errors import AebenchError, SuiteError
from aebench.job import Evaluation, Job
from aebench.registry import REGISTRIES, check_name
from aebench.specs import DataSpec, EvalSpec, ModelSpec, NamedSpec, TrainSpec, TuneSpec
from aebench.yamlio import apply_overrides, parse_override, read_yaml, safe_load

__all__ = ["Suite", "Job", "load_suite", "validate", "parse_suite", "loader_options", "apply_overrides",
           "parse_override", "read_yaml", "safe_load"]

SUITE_VERSION = 1


# -- the suite -------------------------------------------------------------------------------------
@dataclass
class Suite:
    name: str
    models: list[ModelSpec]
    datasets: list[NamedSpec]
    version: int = SUITE_VERSION
    description: str = ""
    backbone: NamedSpec = field(default_factory=lambda: NamedSpec("mlp"))
    latent_dim: int = 16
    likelihood: NamedSpec = field(default_factory=lambda: NamedSpec("bernoulli"))
    seeds: list[int] = field(default_factory=lambda: [0])
    train: TrainSpec = field(default_factory=TrainSpec)
    data: DataSpec = field(default_factory=DataSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    metrics: list[NamedSpec] = field(default_factory=lambda: [NamedSpec("recon")])
    plugins: list[str] = field(default_factory=list)
    launcher: NamedSpec = field(default_factory=lambda: NamedSpec("local"))
    tune: TuneSpec = field(default_factory=TuneSpec)
    path: str | None = None
    narrowed: bool = False  # --models kept some entries only (tuning.json then keeps the others' records)

    def evaluation(self, split: str | None = None, metrics: list[NamedSpec] | None = None) -> Evaluation:
        """What the suite computes on every trained job (not part of any training id)."""
        return Evaluation(metrics=[NamedSpec(m.name, dict(m.options)) for m in (metrics or self.metrics)],
                          samplers=[NamedSpec(s.name, dict(s.options)) for s in self.eval.samplers],
                          n_samples=self.eval.n_samples, batch_size=self.eval.batch_size,
                          test_limit=self.data.test_limit, split=split or self.eval.split)

    def selection_evaluation(self) -> Evaluation:
        """The tuning's evaluation: the selection metric alone (with the suite's settings for it), on val."""
        name, key = self.tune.metric.split("/", 1)
        listed = next((m for m in self.metrics if m.name == name), NamedSpec(name))
        evaluation = self.evaluation("val", [listed])
        named = [s for s in evaluation.samplers if key == s.name or key.endswith("_" + s.name)]
        if named:  # fid/gaussian needs the gaussian sampler's samples only: fit and draw no others
            evaluation.samplers = named
        return evaluation

    def val_size(self, ds: NamedSpec) -> int:
        """Images held out for validation: ``data.val``, else the dataset's default (MNIST: 10,000)."""
        if self.data.val is not None:
            return self.data.val
        return int(REGISTRIES["datasets"].meta(ds.name).get("val", 0)) if ds.name in REGISTRIES["datasets"] else 0

    def _job(self, spec: ModelSpec, label: str, params: dict[str, Any], ds: NamedSpec, seed: int,
             evaluation: Evaluation, train: dict[str, Any] | None = None, trial: int | None = None) -> Job:
        tspec = copy.deepcopy(self.train)
        for k, v in {**spec.train, **(train or {})}.items():  # the entry's own values, then a trial's
            setattr(tspec, k, v)
        return Job(suite=self.name, model=spec.name, label=label, params=params, dataset=ds.name,
                   dataset_options=loader_options(ds), seed=seed, backbone=self.backbone.name,
                   backbone_options=dict(self.backbone.options),
                   latent_dim=ds.options.get("latent_dim", self.latent_dim),
                   likelihood=self.likelihood.name, likelihood_options=dict(self.likelihood.options), train=tspec,
                   train_limit=self.data.train_limit, evaluation=evaluation, val=self.val_size(ds), trial=trial)

    def tuned(self, spec: ModelSpec) -> bool:
        return self.tune.trials > 0 and bool(spec.search)

    def trial_jobs(self) -> list[Job]:
        """Every trial of every entry with a search space, on the tuning seeds, evaluated on val."""
        from aebench.tuning import entry_points, split_point, trial_label

        jobs = []
        evaluation = self.selection_evaluation()
        for spec in self.models:
            if not self.tuned(spec):
                continue
            base = spec.label or spec.name
            for t, point in enumerate(entry_points(self, spec)):
                params, train = split_point(point)
                if self.tune.epochs is not None:  # a shorter search budget, equal for every model
                    train = {"epochs": self.tune.epochs, **train}
                for ds in self.datasets:
                    for seed in self.tune.seeds:
                        jobs.append(self._job(spec, trial_label(base, t), {**spec.params, **params}, ds, seed,
                                              evaluation, train, trial=t))
        return jobs

    def jobs(self, selected: dict[str, dict[str, Any]] | None = None) -> list[Job]:
        """Every model (and grid point) x dataset x seed, in a stable order. With tuning, an entry with a search
        space runs with its selected point (``selected[label]``), and is left out until one is selected."""
        from aebench.tuning import split_point

        jobs = []
        evaluation = self.evaluation()
        for spec in self.models:
            train: dict[str, Any] = {}
            extra: dict[str, Any] = {}
            if self.tuned(spec):
                point = (selected or {}).get(spec.label or spec.name)
                if point is None:
                    continue
                extra, train = split_point(point)
            for params, label in _grid_points(spec):
                for ds in self.datasets:
                    for seed in self.seeds:
                        jobs.append(self._job(spec, label, {**params, **extra}, ds, seed, evaluation, train))
        return jobs


def loader_options(dataset: NamedSpec) -> dict[str, Any]:
    """A dataset entry's options for its loader: all but ``latent_dim``, which sets the protocol."""
    return {k: v for k, v in dataset.options.items() if k != "latent_dim"}


def _grid_points(spec: ModelSpec) -> list[tuple[dict[str, Any], str]]:
    base = spec.label or spec.name
    if not spec.grid:
        return [(dict(spec.params), base)]
    keys = sorted(spec.grid)
    points = []
    for combo in itertools.product(*(spec.grid[k] for k in keys)):
        chosen = dict(zip(keys, combo))
        points.append(({**spec.params, **chosen}, f"{base}[{','.join(f'{k}={v}' for k, v in chosen.items())}]"))
    return points


def _named(value: Any, where: str, key: str = "name", nested: str | None = None) -> NamedSpec:
    """``"mnist"`` or ``{name: mnist, ...options}`` (or options under ``nested``)."""
    if isinstance(value, str):
        return NamedSpec(value)
    if not isinstance(value, dict):
        raise SuiteError(None, where, f"expected a name or a mapping with '{key}', got {type(value).__name__}")
    if key not in value or not isinstance(value[key], str):
        raise SuiteError(None, f"{where}.{key}", "missing (a registered name is required)")
    options = {k: v for k, v in value.items() if k != key}
    if nested is not None:
        extra = sorted(set(options) - {nested})
        if extra:
            raise SuiteError(None, f"{where}.{extra[0]}", f"unknown field; allowed: {key}, {nested}")
        options = options.get(nested) or {}
        if not isinstance(options, dict):
            raise SuiteError(None, f"{where}.{nested}", "expected a mapping")
    return NamedSpec(value[key], options)


def _named_list(value: Any, where: str, nested: str | None = None) -> list[NamedSpec]:
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list):
        raise SuiteError(None, where, f"expected a list, got {type(value).__name__}")
    return [_named(v, f"{where}[{i}]", nested=nested) for i, v in enumerate(value)]


def _models(value: Any) -> list[ModelSpec]:
    if value is None or value == []:
        raise SuiteError(None, "models", "empty: list at least one model (see `aebench ls models`)")
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list):
        raise SuiteError(None, "models", f"expected a list, got {type(value).__name__}")
    out = []
    for i, v in enumerate(value):
        where = f"models[{i}]"
        if isinstance(v, str):
            v = {"name": v}
        if isinstance(v, dict) and "name" not in v:
            raise SuiteError(None, f"{where}.name", "missing (a registered model name is required, see `aebench ls "
                             "models`)")
        spec = from_dict(ModelSpec, v, where)
        if not isinstance(spec.name, str):
            raise SuiteError(None, f"{where}.name", "expected a registered model name")
        for k, values in spec.grid.items():
            if not isinstance(values, list) or not values:
                raise SuiteError(None, f"{where}.grid.{k}", "expected a non-empty list of values")
        if spec.search:
            from aebench.tuning import check_space

            check_space(spec.search, f"{where}.search")
            if spec.grid:
                raise SuiteError(None, f"{where}.search", "give either 'grid' or 'search', not both")
        out.append(spec)
    return out


SECTIONS = ("version", "name", "description", "datasets", "dataset", "backbone", "latent_dim", "likelihood",
            "models", "seeds", "train", "data", "eval", "metrics", "plugins", "launcher", "tune")


def parse_suite(raw: Any, name: str = "suite") -> Suite:
    """Turn the raw YAML mapping into a ``Suite``; checks types and shapes, not registry names."""
    if not isinstance(raw, dict):
        raise SuiteError(None, None, f"a suite must be a mapping of sections, got {type(raw).__name__}")
    unknown = [k for k in raw if k not in SECTIONS]
    if unknown:
        raise SuiteError(None, str(unknown[0]), unknown_field(unknown[0], list(SECTIONS)))
    if "version" not in raw:
        raise SuiteError(None, "version", f"missing; add 'version: {SUITE_VERSION}'")
    if raw["version"] != SUITE_VERSION:
        raise SuiteError(None, "version", f"unsupported version {raw['version']!r}; allowed: {SUITE_VERSION}")
    if "dataset" in raw and "datasets" in raw:
        raise SuiteError(None, "dataset", "give either 'dataset' or 'datasets', not both")
    datasets = raw.get("datasets", raw.get("dataset"))
    if datasets is None or datasets == []:
        raise SuiteError(None, "datasets", "missing: name at least one dataset (see `aebench ls datasets`)")
    suite_name = raw.get("name", name)
    if not isinstance(suite_name, str):
        raise SuiteError(None, "name", f"expected a string, got {type(suite_name).__name__}")
    try:
        check_name(suite_name, "suite name")
    except AebenchError as e:
        raise SuiteError(None, "name", str(e)) from None
    seeds = raw.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    from aebench.config import coerce

    seeds = coerce(seeds, list[int], "seeds")
    if not seeds:
        raise SuiteError(None, "seeds", "empty: list at least one seed")
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise SuiteError(None, "seeds", f"seeds must be distinct integers >= 0, got {seeds}")
    latent = coerce(raw.get("latent_dim", 16), int, "latent_dim")
    if latent <= 0:
        raise SuiteError(None, "latent_dim", f"must be > 0, got {latent}")
    plugins = coerce(raw.get("plugins") or [], list[str], "plugins")
    description = coerce(raw.get("description", ""), str, "description")
    dataset_specs = _named_list(datasets, "datasets")
    for i, ds in enumerate(dataset_specs):  # a dataset may set its own latent size (8-3-8 beside 10-4-10)
        if "latent_dim" in ds.options:
            value = coerce(ds.options["latent_dim"], int, f"datasets[{i}].latent_dim")
            if value <= 0:
                raise SuiteError(None, f"datasets[{i}].latent_dim", f"must be > 0, got {value}")
    suite = Suite(
        name=suite_name,
        models=_models(raw.get("models")),
        datasets=dataset_specs,
        description=description,
        backbone=_named(raw.get("backbone", "mlp"), "backbone"),
        latent_dim=latent,
        likelihood=_named(raw.get("likelihood", "bernoulli"), "likelihood"),
        seeds=seeds,
        train=from_dict(TrainSpec, raw.get("train") or {}, "train"),
        data=from_dict(DataSpec, raw.get("data") or {}, "data"),
        eval=_eval_spec(raw.get("eval") or {}),
        metrics=_named_list(raw.get("metrics", ["recon"]) or [], "metrics"),
        plugins=plugins,
        launcher=_named(_default_name(raw.get("launcher", "local"), "local"), "launcher"),
        tune=from_dict(TuneSpec, raw.get("tune") or {}, "tune"),
    )
    _check_entry_training(suite)
    return suite


def _check_entry_training(suite: Suite) -> None:
    """An entry's ``train:`` may set the searchable fields only (the budget, epochs and selection, stays
    the suite's, equal for every model), with TrainSpec's types and checks."""
    from dataclasses import asdict

    from aebench.tuning import TRAIN_KEYS

    for i, spec in enumerate(suite.models):
        for key in spec.train:
            if key not in TRAIN_KEYS:
                raise SuiteError(None, f"models[{i}].train.{key}", unknown_field(key, list(TRAIN_KEYS)) +
                                 " (an entry may set these; the budget is the suite's)")
        if spec.train:
            checked = from_dict(TrainSpec, {**asdict(suite.train), **spec.train}, f"models[{i}].train")
            spec.train = {k: getattr(checked, k) for k in spec.train}  # coerced: "1e-3" is a float


def _eval_spec(raw: Any) -> EvalSpec:
    spec = from_dict(EvalSpec, raw, "eval")
    spec.samplers = _named_list(spec.samplers, "eval.samplers")
    return spec


def _default_name(value: Any, default: str) -> Any:
    """``{partition: gpu}`` (from ``--set launcher.partition=gpu`` on a suite without one) names the default."""
    return {"name": default, **value} if isinstance(value, dict) and "name" not in value else value


def load_suite(
    path: str | os.PathLike,
    overrides: list[str] | None = None,
    models: list[str] | None = None,
    seeds: list[int] | None = None,
    check: bool = True,
) -> Suite:
    """Read, override, narrow (``--models``, ``--seeds``), load plugins, and validate a suite file."""
    path = Path(path)
    try:
        raw = read_yaml(path)
        if isinstance(raw, dict):
            raw = apply_overrides(raw, overrides or [])
        suite = parse_suite(raw, name=path.stem)
        suite.path = str(path)
        from aebench.plugins import load_plugins

        try:
            load_plugins(suite.plugins, base=path.parent)
        except AebenchError as e:
            raise SuiteError(None, "plugins", str(e)) from None
        if models:
            _narrow_models(suite, models)
        if seeds is not None:
            missing = [s for s in seeds if s not in suite.seeds]
            if missing:
                raise SuiteError(None, "seeds", f"--seeds {missing[0]} is not a seed of the suite; "
                                 f"allowed: {', '.join(map(str, suite.seeds))}")
            suite.seeds = [s for s in suite.seeds if s in seeds]
        if check:
            from aebench.validate import validate

            validate(suite)
    except SuiteError as e:
        if e.file is None:
            e.file = str(path)
        raise
    return suite


def _narrow_models(suite: Suite, names: list[str]) -> None:
    """Keep only the models named (``--models``); a name not in the suite is added with defaults."""
    from aebench.registry import MODELS

    keep = []
    for n in names:
        matches = [m for m in suite.models if n in (m.name, m.label)]
        if not matches:
            try:
                canon = MODELS.canonical(n)
            except AebenchError as e:
                raise SuiteError(None, "--models", str(e)) from None
            matches = [m for m in suite.models if m.name == canon] or [ModelSpec(canon)]
        keep += [m for m in matches if m not in keep]
    suite.models = keep
    suite.narrowed = True


def validate(suite: Suite) -> None:
    """Check every name against its registry and every setting against what it accepts (``aebench.validate``)."""
    from aebench.validate import validate as check

    check(suite)
