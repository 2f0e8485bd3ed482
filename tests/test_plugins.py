"""Plugin discovery: entry points, temporary plugins, broken plugins and the `plugins` command."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

import stageflow
from stageflow import plugins
from stageflow.errors import PluginError, UnknownStageError
from stageflow.plugins import load_registry, make_plugin_manager
from tests.helpers import FIXTURES, REPO, run_stageflow


class Text(BaseModel):
    id: str
    text: str


class Upper(stageflow.Stage):
    name = "upper"
    Input = Text
    Output = Text

    def process(self, item: Text) -> Text:
        return Text(id=item.id, text=item.text.upper())


class OtherUpper(Upper):
    """A different class that claims the same stage name."""


class TempPlugin:
    """A plugin object providing the `upper` stage."""

    @stageflow.hookimpl
    def stageflow_register_stages(self) -> list[type[stageflow.Stage]]:
        return [Upper]


@pytest.fixture
def temp_plugin() -> Iterator[TempPlugin]:
    """A temporary plugin, registered in a fresh plugin manager and unregistered afterwards."""
    plugin = TempPlugin()
    pm, problems, _ = make_plugin_manager(load_entrypoints=False, plugins=[plugin])
    try:
        assert problems == []
        yield plugin
    finally:
        pm.unregister(plugin)
        assert not pm.is_registered(plugin)


def test_temporary_plugin_stage_is_registered(temp_plugin: TempPlugin) -> None:
    """A plugin registered in code provides its stage, marked as registered in code."""
    registry = load_registry(load_entrypoints=False, plugins=[temp_plugin])
    entry = registry.resolve("upper")
    assert entry.cls is Upper
    assert entry.distribution == "(registered in code)"
    assert entry.reference == f"{__name__}:Upper"
    assert registry.problems == []


def test_installed_seed_plugin_is_discovered() -> None:
    """The seed plugin arrives through its entry point with its distribution and version."""
    registry = load_registry()
    for name in ("preprocessor", "analyzer", "collector"):
        entry = registry.stages[name]
        assert (entry.plugin, entry.distribution, entry.version) == (
            "seed",
            "stageflow-seed",
            "0.1.0",
        )


def test_entry_point_plugins_and_code_plugins_mix(temp_plugin: TempPlugin) -> None:
    """Stages from code plugins sit beside those from installed plugins."""
    registry = load_registry(plugins=[temp_plugin])
    assert {"upper", "preprocessor"} <= set(registry.stages)


def test_duplicate_stage_names_are_reported(temp_plugin: TempPlugin) -> None:
    """Two plugins claiming one stage name: the first keeps it, the second is reported."""

    class Clash:
        @stageflow.hookimpl
        def stageflow_register_stages(self) -> list[type[stageflow.Stage]]:
            return [OtherUpper]

    registry = load_registry(load_entrypoints=False, plugins=[temp_plugin, Clash()])
    assert len(registry.problems) == 1
    assert "stage name 'upper' is already registered by plugin" in str(registry.problems[0])
    assert "rename one of them" in str(registry.problems[0])
    assert registry.stages["upper"].cls in (Upper, OtherUpper)


def test_misspelt_hook_fails_loudly() -> None:
    """A hook implementation whose name matches no hookspec is an error naming the hook."""

    class Misspelt:
        @stageflow.hookimpl
        def stageflow_register_stage(self) -> list[type[stageflow.Stage]]:
            return [Upper]

    with pytest.raises(PluginError, match="stageflow_register_stage"):
        make_plugin_manager(load_entrypoints=False, plugins=[Misspelt()])


def test_failing_hook_does_not_hide_other_plugins(temp_plugin: TempPlugin) -> None:
    """A plugin whose hook raises is reported by name; other plugins' stages stay usable."""

    class Exploding:
        @stageflow.hookimpl
        def stageflow_register_stages(self) -> list[type[stageflow.Stage]]:
            raise RuntimeError("config file missing")

    class NotAStage:
        @stageflow.hookimpl
        def stageflow_register_stages(self) -> list[type]:
            return [dict]

    registry = load_registry(
        load_entrypoints=False, plugins=[Exploding(), temp_plugin, NotAStage()]
    )
    assert "upper" in registry.stages
    errors = sorted(p.error for p in registry.problems)
    assert errors == [
        "PluginError: <class 'dict'> is not a stageflow.Stage subclass",
        "RuntimeError: config file missing",
    ]
    with pytest.raises(UnknownStageError, match="note: plugin"):
        registry.resolve("missing")


def test_unknown_stage_lists_known_ones(temp_plugin: TempPlugin) -> None:
    """Resolving an unknown name names it and lists the stages that exist."""
    registry = load_registry(load_entrypoints=False, plugins=[temp_plugin])
    with pytest.raises(UnknownStageError) as info:
        registry.resolve("lower")
    assert str(info.value) == (
        "unknown stage 'lower': install the plugin that provides it or use one of upper"
    )


def test_resolve_by_import_reference() -> None:
    """`package.module:Class` imports the class; bad references say what is wrong."""
    registry = load_registry(load_entrypoints=False)
    assert registry.resolve("stageflow_seed.stages:Analyzer").cls.name == "analyzer"
    assert registry.resolve("stageflow_seed.stages:Analyzer").distribution == "stageflow-seed"
    assert registry.resolve("tests.graph.stages:Split").distribution is None  # not installed
    with pytest.raises(UnknownStageError, match="cannot import module 'no_such_pkg'"):
        registry.resolve("no_such_pkg:Stage")
    with pytest.raises(UnknownStageError, match="has no attribute 'Nope'"):
        registry.resolve("stageflow_seed.stages:Nope")
    with pytest.raises(UnknownStageError, match=r"is not a stageflow\.Stage subclass"):
        registry.resolve("stageflow_seed.stages:RawSeries")


def test_an_import_reference_looks_its_distribution_up_only_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Finding a module's distribution reads every installed one's file list: a run, which
    never shows it, does not pay for it."""
    looked_up: list[str] = []
    monkeypatch.setattr(plugins, "_distribution_of", lambda name: looked_up.append(name) or "d")
    entry = load_registry(load_entrypoints=False).resolve("stageflow_seed.stages:Analyzer")
    assert looked_up == []
    assert entry.distribution == "d" and entry.distribution == "d"
    assert looked_up == ["stageflow_seed.stages"]


def test_plugins_command_lists_seed_stages() -> None:
    """`stageflow plugins` shows the seed plugin's distribution, version and Input → Output."""
    result = run_stageflow("plugins")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "seed  [stageflow-seed 0.1.0]" in lines
    assert "  preprocessor: RawSeries → Preprocessed  (stageflow_seed.stages:Preprocessor)" in lines
    assert "  analyzer: Preprocessed → AnalysisResult  (stageflow_seed.stages:Analyzer)" in lines
    assert (
        "  collector: AnalysisResult → AnalysisResult  (stageflow_seed.stages:Collector)" in lines
    )


def test_plugins_command_discovers_installed_fixture(wordcount_plugin_path: Path) -> None:
    """A plugin distribution installed with pip is found through its entry point."""
    result = run_stageflow("plugins", pythonpath=[wordcount_plugin_path])
    assert result.returncode == 0, result.stderr
    assert "wordcount  [stageflow-wordcount 1.2.3]" in result.stdout
    assert "  wordcount: Line → Count  (stageflow_wordcount:WordCount)" in result.stdout
    assert "seed  [stageflow-seed 0.1.0]" in result.stdout


def test_broken_plugin_is_reported_and_others_keep_working(
    broken_plugin_path: Path, wordcount_plugin_path: Path
) -> None:
    """A plugin that fails to import is reported by name; the others are still listed."""
    result = run_stageflow("plugins", pythonpath=[broken_plugin_path, wordcount_plugin_path])
    assert result.returncode == 0, result.stderr
    broken = (
        "plugin 'broken' (from stageflow-broken) could not be loaded: importing "
        "'stageflow_broken' raised ImportError: No module named 'numpy_that_is_not_installed'"
    )
    assert f"BROKEN {broken}" in result.stdout.splitlines()
    assert "wordcount  [stageflow-wordcount 1.2.3]" in result.stdout
    assert "seed  [stageflow-seed 0.1.0]" in result.stdout
    assert "Traceback" not in result.stderr


def test_validate_uses_installed_fixture_plugin(
    broken_plugin_path: Path, wordcount_plugin_path: Path
) -> None:
    """`stageflow validate` resolves a stage of a pip-installed plugin despite a broken one."""
    pipeline = Path(__file__).parent / "fixtures" / "wordcount_plugin" / "pipeline.yaml"
    result = run_stageflow(
        "validate", str(pipeline), pythonpath=[broken_plugin_path, wordcount_plugin_path]
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{pipeline}: pipeline 'wordcount' is valid (count)\n"


def test_validate_without_the_plugin_names_the_missing_stage() -> None:
    """Without the fixture distribution installed, its stage is unknown (exit status 2)."""
    pipeline = Path(__file__).parent / "fixtures" / "wordcount_plugin" / "pipeline.yaml"
    result = run_stageflow("validate", str(pipeline))
    assert result.returncode == 2
    assert result.stderr.startswith("stageflow: error: unknown stage 'wordcount'")


def test_readme_plugin_example_is_the_fixture() -> None:
    """The plugin shown in the README is the fixture distribution the tests install and run."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    fixture = FIXTURES / "wordcount_plugin"
    for name, lang in (("pyproject.toml", "toml"), ("stageflow_wordcount/__init__.py", "python")):
        marker = f"`{name}`:\n\n```{lang}\n"
        assert marker in readme, f"README.md no longer shows {name}"
        block = readme.split(marker, 1)[1].split("```\n", 1)[0]
        assert block == (fixture / name).read_text(encoding="utf-8"), (
            f"README.md's {name} differs from tests/fixtures/wordcount_plugin/{name}"
        )


def test_a_uses_module_that_raises_at_import_is_one_line_exit_2(tmp_path: Path) -> None:
    """Any exception importing a `uses:` module: one line naming module and exception, exit 2.

    With -v (before or after the subcommand) the traceback comes first.
    """
    (tmp_path / "explodes.py").write_text("raise RuntimeError('config server unreachable')\n")
    pipe = tmp_path / "p.yaml"
    pipe.write_text("name: p\nstages:\n  - {name: a, uses: 'explodes:Stage'}\n")
    done = run_stageflow("validate", str(pipe), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        "stageflow: error: importing module 'explodes' for stage 'explodes:Stage' raised "
        "RuntimeError: config server unreachable; fix the module (run with -v for the "
        "traceback)\n"
    )
    for args in (("-v", "validate", str(pipe)), ("validate", str(pipe), "-v")):
        verbose = run_stageflow(*args, cwd=tmp_path)
        assert verbose.returncode == 2
        assert "Traceback" in verbose.stderr and 'explodes.py", line 1' in verbose.stderr
        assert verbose.stderr.endswith("fix the module (run with -v for the traceback)\n")


def test_unknown_references_offer_the_closest_name() -> None:
    """A misspelt registered stage or class name gets a "did you mean"."""
    registry = load_registry()
    with pytest.raises(UnknownStageError, match="did you mean 'analyzer'"):
        registry.resolve("analyser")
    with pytest.raises(UnknownStageError, match="did you mean 'Analyzer'"):
        registry.resolve("stageflow_seed.stages:Analyser")
