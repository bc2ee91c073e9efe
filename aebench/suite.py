"""Suite files: YAML read with ``yaml.safe_load`` into typed dataclasses, validated, expanded to jobs.

A suite is data, never code. Loading one applies ``--set`` overrides, loads its plugins, checks every
name against the registries and every setting against its model, metric or backbone, all before
anything trains. Every error names the file, the field path and what is allowed.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aebench.config import from_dict, unknown_field
from aebench.errors import AebenchError, SuiteError
from aebench.registry import REGISTRIES, check_name

SUITE_VERSION = 1
LIKELIHOODS = ("bernoulli", "gaussian")
OPTIMIZER_NAMES = ("adam", "adamw", "sgd", "rmsprop")  # aebench.models.base.OPTIMIZERS implements them


# -- the schema ---------------------------------------------------------------------------------------
@dataclass
class TrainSpec:
    """The training budget, the same for every model of the suite."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = None
    checkpoint_every: int = 1
    precision: str = "fp32"  # or bf16: autocast on GPUs that have it
    compile: bool = False  # torch.compile the model's loss

    def __post_init__(self) -> None:
        _positive(self, "epochs", "batch_size", "lr", "checkpoint_every")
        if self.precision not in ("fp32", "bf16"):
            raise SuiteError(None, "precision", f"unknown precision {self.precision!r}; allowed: fp32, bf16")
        if self.weight_decay < 0:
            raise SuiteError(None, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise SuiteError(None, "grad_clip", f"must be > 0 or null, got {self.grad_clip}")
        if self.optimizer not in OPTIMIZER_NAMES:
            raise SuiteError(None, "optimizer", f"unknown optimizer {self.optimizer!r}; allowed: "
                             f"{', '.join(OPTIMIZER_NAMES)}")


@dataclass
class DataSpec:
    """Where data lives and how much of it to use (limits make quick tries and tests cheap)."""

    root: str | None = None
    train_limit: int | None = None
    test_limit: int | None = None

    def __post_init__(self) -> None:
        _positive(self, "train_limit", "test_limit")


@dataclass
class EvalSpec:
    """How generated images are drawn for the metrics."""

    samplers: list[str] = field(default_factory=lambda: ["prior", "gaussian"])
    n_samples: int = 10_000
    batch_size: int = 1000

    def __post_init__(self) -> None:
        _positive(self, "n_samples", "batch_size")


@dataclass
class NamedSpec:
    """A registry name plus its options (a dataset, backbone, metric, likelihood or launcher)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelSpec:
    """A model entry: fixed hyperparameters, and a grid whose every combination becomes its own job."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    label: str | None = None


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
    path: str | None = None

    def jobs(self) -> list[Job]:
        """Every model (and grid point) x dataset x seed, in a stable order."""
        jobs = []
        for spec in self.models:
            for params, label in _grid_points(spec):
                for ds in self.datasets:
                    for seed in self.seeds:
                        jobs.append(Job(
                            suite=self.name, model=spec.name, label=label, params=params,
                            dataset=ds.name, dataset_options=loader_options(ds), seed=seed,
                            backbone=self.backbone.name, backbone_options=dict(self.backbone.options),
                            latent_dim=ds.options.get("latent_dim", self.latent_dim), likelihood=self.likelihood.name,
                            likelihood_options=dict(self.likelihood.options),
                            train=asdict(self.train),
                            data={"train_limit": self.data.train_limit, "test_limit": self.data.test_limit},
                            eval=asdict(self.eval),
                            metrics=[(m.name, dict(m.options)) for m in self.metrics],
                        ))
        return jobs


def loader_options(dataset: NamedSpec) -> dict[str, Any]:
    """A dataset entry's options for its loader: all but ``latent_dim``, which sets the protocol."""
    return {k: v for k, v in dataset.options.items() if k != "latent_dim"}


@dataclass
class Job:
    """One training-and-evaluation run; its id is a hash of everything that determines its results."""

    suite: str
    model: str
    label: str
    params: dict[str, Any]
    dataset: str
    dataset_options: dict[str, Any]
    seed: int
    backbone: str
    backbone_options: dict[str, Any]
    latent_dim: int
    likelihood: str
    likelihood_options: dict[str, Any]
    train: dict[str, Any]
    data: dict[str, Any]
    eval: dict[str, Any]
    metrics: list[tuple[str, dict[str, Any]]]

    def config(self) -> dict[str, Any]:
        """The canonical configuration (JSON-ready), as written to ``config.json``."""
        cfg = asdict(self)
        cfg["metrics"] = [[n, s] for n, s in self.metrics]
        return cfg

    @property
    def hash(self) -> str:
        cfg = self.config()
        del cfg["suite"], cfg["label"]  # presentation only: the same run under another name is the same run
        return _digest(cfg)

    @property
    def id(self) -> str:
        """Folder name: readable prefix and the configuration hash (``vae-mnist-s0-3f2a9c1b0d``)."""
        return f"{self.model}-{self.dataset}-s{self.seed}-{self.hash[:10]}"

    @property
    def protocol(self) -> str:
        """Fingerprint of the comparison protocol: all but the model, its hyperparameters and the seed.

        Only results under the same protocol are ranked together on a leaderboard.
        """
        cfg = self.config()
        for key in ("suite", "label", "model", "params", "seed"):
            del cfg[key]
        return _digest(cfg)[:12]

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Job:
        cfg = dict(cfg)
        cfg["metrics"] = [(n, dict(s)) for n, s in cfg["metrics"]]
        return cls(**cfg)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _positive(obj: Any, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        if v is not None and v <= 0:
            raise SuiteError(None, n, f"must be > 0, got {v}")


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


# -- reading ------------------------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``) and refuses a key
    given twice (plain YAML keeps the last silently, so an edit could be lost without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice; keep one", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def safe_load(text: str):
    """Parse YAML as data only: no tags that construct objects."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def read_yaml(path: str | os.PathLike) -> Any:
    """``yaml.safe_load`` of a file, with a one-line error naming the file and the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AebenchError(f"{path}: no such suite file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AebenchError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from None
    try:
        return safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        tag = re.search(r"for the tag '(?:tag:yaml\.org,2002:)?([^']*)'", problem)
        if tag:
            raise SuiteError(str(path), None, f"malformed YAML at {where}: tag '!!{tag.group(1)}' is not allowed, "
                             "a suite is data; allowed: plain mappings, lists, strings, numbers, true/false, "
                             "null") from None
        raise SuiteError(str(path), None, f"malformed YAML at {where}: {problem}") from None
    except RecursionError:
        raise SuiteError(str(path), None, "malformed YAML: nested too deeply") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``key.path=value`` -> (["key", "path"], value), the value read as YAML (``3`` is an int)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise AebenchError(f"--set {text!r}: expected key.path=value")
    try:
        value = safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to the raw mapping (list items by index: ``models.0.params.beta=4``)."""
    raw = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node: Any = raw
        for i, part in enumerate(path[:-1]):
            where = ".".join(path[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise AebenchError(f"--set {text}: {where} is not an index of a {len(node)}-item list")
                node = node[int(part)]
            elif isinstance(node, dict):
                if isinstance(node.get(part), str):  # `launcher: slurm` + --set launcher.partition=gpu
                    node[part] = {"name": node[part]}
                elif not isinstance(node.get(part), (dict, list)):
                    node[part] = {}
                node = node[part]
            else:
                raise AebenchError(f"--set {text}: {where} is not a mapping")
        last = path[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise AebenchError(f"--set {text}: {last} is not an index of a {len(node)}-item list")
            node[int(last)] = value
        else:
            node[last] = value
    return raw


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
        out.append(spec)
    return out


SECTIONS = ("version", "name", "description", "datasets", "dataset", "backbone", "latent_dim", "likelihood",
            "models", "seeds", "train", "data", "eval", "metrics", "plugins", "launcher")


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
        eval=from_dict(EvalSpec, raw.get("eval") or {}, "eval"),
        metrics=_named_list(raw.get("metrics", ["recon"]) or [], "metrics"),
        plugins=plugins,
        launcher=_named(_default_name(raw.get("launcher", "local"), "local"), "launcher"),
    )
    return suite


def _default_name(value: Any, default: str) -> Any:
    """``{partition: gpu}`` (from ``--set launcher.partition=gpu`` on a suite without one) names the default."""
    return {"name": default, **value} if isinstance(value, dict) and "name" not in value else value


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
    if suite.likelihood.name not in LIKELIHOODS:
        raise SuiteError(None, "likelihood", f"unknown likelihood {suite.likelihood.name!r}; "
                         f"allowed: {', '.join(LIKELIHOODS)}")
    for i, s in enumerate(suite.eval.samplers):
        suite.eval.samplers[i] = known("samplers", s, f"eval.samplers[{i}]")
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
    from aebench.metrics.base import metric_settings
    from aebench.models.base import model_config

    for i, spec in enumerate(suite.models):
        for params, _ in _grid_points(spec):
            model_config(spec.name, params, f"models[{i}].params")
    for i, m in enumerate(suite.metrics):
        allowed = metric_settings(m.name)
        for key in m.options:
            if key not in allowed:
                raise SuiteError(None, f"metrics[{i}].{key}", f"unknown setting of metric {m.name!r}; "
                                 f"allowed: {', '.join(sorted(allowed)) or 'none'}")
    from aebench.registry import BACKBONES, LAUNCHERS

    try:  # launchers check their options on construction, without side effects
        LAUNCHERS.get(suite.launcher.name)(**suite.launcher.options)
    except SuiteError:
        raise
    except (AebenchError, TypeError) as e:
        raise SuiteError(None, "launcher", str(e)) from None
    accepted = set(inspect.signature(BACKBONES.get(suite.backbone.name)).parameters) - {
        "image_shape", "enc_out", "latent_dim"}
    for key in suite.backbone.options:
        if key not in accepted:
            raise SuiteError(None, f"backbone.{key}", f"unknown option of backbone {suite.backbone.name!r}; "
                             f"allowed: {', '.join(sorted(accepted))}")


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
