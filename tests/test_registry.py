"""The registry: aliases, duplicates, did-you-mean, lazy entries, metadata, plugins."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from aebench import plugins
from aebench.errors import AebenchError, UnknownNameError
from aebench.registry import MODELS, REGISTRIES, Registry, check_name


def test_register_with_aliases_and_metadata():
    reg: Registry = Registry("thing")

    @reg.register("alpha", "a", "first", description="the first", direction="max")
    def alpha():
        return 1

    assert reg.get("a") is alpha and reg.get("first") is alpha
    assert reg.canonical("first") == "alpha"
    assert reg.meta("a") == {"direction": "max"}
    assert reg.entry("alpha").description == "the first"
    assert "a" in reg and "beta" not in reg and len(reg) == 1


def test_description_defaults_to_docstring():
    reg: Registry = Registry("thing")

    @reg.register("documented")
    class Documented:
        """One line that says why.

        More text."""

    assert reg.entry("documented").description == "One line that says why."


def test_duplicates_are_refused_for_names_and_aliases():
    reg: Registry = Registry("thing")
    reg.register("alpha", "a", target=1)
    with pytest.raises(AebenchError, match="'alpha' is already registered"):
        reg.register("alpha", target=2)
    with pytest.raises(AebenchError, match="'a' is already registered"):
        reg.register("other", "a", target=3)
    assert reg.get("alpha") == 1 and reg.names() == ["alpha"]


def test_unknown_name_suggests_close_names():
    reg: Registry = Registry("model")
    for n in ("vae", "beta-vae", "ae", "wae-mmd"):
        reg.register(n, target=n)
    with pytest.raises(UnknownNameError) as err:
        reg.get("vea")
    msg = str(err.value)
    assert msg.startswith("unknown model 'vea'; did you mean 'vae'")
    assert "known: ae, beta-vae, vae, wae-mmd" in msg
    with pytest.raises(UnknownNameError, match=r"unknown model 'zzzzzz' \(known"):
        reg.get("zzzzzz")


def test_lazy_entries_import_on_first_use():
    reg: Registry = Registry("thing")
    reg.register("decoder", target="json:JSONDecoder")
    assert reg.entry("decoder").lazy
    import json

    assert reg.get("decoder") is json.JSONDecoder
    assert not reg.entry("decoder").lazy
    reg.register("nested", target="os.path:join")
    import os.path

    assert reg.get("nested") is os.path.join


def test_import_aebench_and_listing_do_not_import_torch():
    code = textwrap.dedent("""
        import sys, aebench
        from aebench.registry import REGISTRIES
        names = {k: r.names() for k, r in REGISTRIES.items()}
        assert 'torch' not in sys.modules, 'torch imported'
        assert 'pandas' not in sys.modules, 'pandas imported'
        print(sorted(names))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "models" in out.stdout


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_every_builtin_entry_resolves(kind):
    """Each lazy built-in string names something that exists, with a description."""
    reg = REGISTRIES[kind]
    assert len(reg) > 0
    for name in reg.names():
        assert reg.get(name) is not None
        assert reg.entry(name).description, f"{kind} {name} has no description"


def test_metrics_carry_direction_and_needs():
    from aebench.registry import METRICS

    for e in METRICS.entries():
        assert e.meta.get("direction") in ("min", "max", None), e.name
        assert set(e.meta.get("needs", ())) <= {"labels", "probabilistic", "log_likelihood", "encoder"}, e.name
        assert set(e.meta.get("uses", ())) <= {"samples"}, e.name


@pytest.mark.parametrize("bad", ["", "..", "a/b", "../x", "/abs", "a\\b", "x" * 65, "-lead", "sp ace", "a..b"])
def test_unsafe_names_are_refused(bad):
    with pytest.raises(AebenchError, match="invalid"):
        check_name(bad)


def test_plugin_from_file_registers_a_model(tmp_path, clean_registry):
    f = tmp_path / "plug.py"
    f.write_text(textwrap.dedent('''
        from aebench import MODELS
        from aebench.models.ae import AE

        @MODELS.register("plugged-ae", description="a plugin model")
        class PluggedAE(AE):
            """A plugin model."""
    '''))
    plugins.load_plugin(str(f))
    assert "plugged-ae" in MODELS
    assert MODELS.entry("plugged-ae").source.startswith("aebench_plugin_plug")
    plugins.load_plugin(str(f))  # idempotent: no duplicate-registration error on a second load


def test_plugin_from_module_and_failures(tmp_path, monkeypatch, clean_registry):
    pkg = tmp_path / "plugpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text(
        "from aebench import METRICS\n"
        "@METRICS.register('plug-metric', direction='min')\n"
        "def plug_metric(ctx):\n    '''A plugin metric.'''\n    return {'x': 1.0}\n"
    )
    (pkg / "broken.py").write_text("import not_a_real_module_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.load_plugin("plugpkg.mod")
    from aebench.registry import METRICS

    assert METRICS.meta("plug-metric") == {"direction": "min"}
    with pytest.raises(AebenchError, match=r"plugin 'plugpkg.broken' failed to import \(ModuleNotFoundError"):
        plugins.load_plugin("plugpkg.broken")
    with pytest.raises(AebenchError, match="no such file"):
        plugins.load_plugin(str(tmp_path / "missing.py"))


def test_plugin_from_entry_point_group(tmp_path, monkeypatch, clean_registry):
    """A distribution advertising ``aebench.plugins`` is loaded by ``load_entry_points``."""
    (tmp_path / "epplug.py").write_text(
        "from aebench import MODELS\nfrom aebench.models.ae import AE\n"
        "MODELS.register('ep-ae', target=AE, description='from an entry point')\n"
    )
    dist = tmp_path / "epplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: epplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[aebench.plugins]\nepplug = epplug\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = plugins.load_entry_points()
    assert "epplug" in loaded and "ep-ae" in MODELS
