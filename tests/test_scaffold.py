"""`stageflow new`: a scaffolded plugin installs into a fresh venv, passes its tests and runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

import pytest

from stageflow.errors import ScaffoldError
from stageflow.scaffold import IMPORTS_MARKER, new_plugin, new_stage
from tests.helpers import REPO, run_stageflow


def in_venv(
    venv: Path, args: Sequence[str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a program of ``venv`` as its own environment: no PYTHONPATH, its bin/ first."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """`new plugin demo-kit` plus `new stage shout`, pip-installed into a fresh venv.

    The venv has no system site-packages; stageflow comes from this worktree (editable),
    the plugin from its directory (a regular install, as a user would). Built once for the
    module's tests: the install is the slow part (about 20 s of CPU).
    """
    root = tmp_path_factory.mktemp("scaffold")
    made = run_stageflow("new", "plugin", "demo-kit", "--dir", str(root))
    assert made.returncode == 0, made.stderr
    project = root / "stageflow-demo-kit"
    added = run_stageflow("new", "stage", "shout", cwd=project)
    assert added.returncode == 0, added.stderr
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    pip = [
        sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
        "--quiet", "--disable-pip-version-check", "--no-compile",
    ]  # fmt: skip
    # One build environment for both builds instead of an isolated one per build.
    for extra in (
        ["setuptools>=68"],
        ["--no-build-isolation", "-e", str(REPO), str(project), "pytest"],
    ):
        done = subprocess.run([*pip, *extra], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    return project, venv


def test_generated_tests_pass_in_the_fresh_venv(installed_plugin: tuple[Path, Path]) -> None:
    """pytest in the new project passes at once: example stage, added stage, pipeline file."""
    project, venv = installed_plugin
    result = in_venv(venv, ["python", "-m", "pytest", "-q", "-p", "no:cacheprovider"], project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "9 passed" in result.stdout  # 4 per stage, 1 for the pipeline file


def test_plugins_lists_the_scaffolded_stages(installed_plugin: tuple[Path, Path]) -> None:
    """`stageflow plugins` in the venv lists the plugin, its distribution and both stages."""
    project, venv = installed_plugin
    text = in_venv(venv, ["stageflow", "plugins"], project)
    assert text.returncode == 0, text.stderr
    assert "demo-kit  [stageflow-demo-kit 0.1.0]" in text.stdout
    assert "  demo-kit: DemoKitInput → DemoKitOutput  (stageflow_demo_kit.demo_kit:DemoKit)" in (
        text.stdout
    )
    listing = json.loads(in_venv(venv, ["stageflow", "plugins", "--json"], project).stdout)
    [plugin] = listing["plugins"]
    assert [stage["name"] for stage in plugin["stages"]] == ["demo-kit", "shout"]


def test_stageflow_run_runs_the_scaffolded_pipeline(installed_plugin: tuple[Path, Path]) -> None:
    """The generated pipeline file runs on the generated sample through real workers."""
    project, venv = installed_plugin
    result = in_venv(
        venv, ["stageflow", "run", "pipeline.yaml", "--input", "sample.jsonl"], project
    )
    assert result.returncode == 0, result.stderr
    outputs = sorted(json.loads(line)["text"] for line in result.stdout.splitlines())
    assert outputs == ["A FIRST RECORD", "AND A SECOND ONE"]


def test_new_plugin_writes_a_complete_package(tmp_path: Path) -> None:
    """The package has the entry point, a py.typed marker, tests, and refuses to overwrite."""
    written = new_plugin("word-count", tmp_path)
    project = tmp_path / "stageflow-word-count"
    assert {p.relative_to(project).as_posix() for p in written} == {
        "pyproject.toml", "README.md", "pipeline.yaml", "sample.jsonl",
        "stageflow_word_count/__init__.py", "stageflow_word_count/word_count.py",
        "stageflow_word_count/py.typed", "tests/test_word_count.py", "tests/test_pipeline.py",
    }  # fmt: skip
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["entry-points"]["stageflow"] == {
        "word-count": "stageflow_word_count"
    }
    before = (project / "README.md").read_text(encoding="utf-8")
    with pytest.raises(ScaffoldError, match="already exists"):
        new_plugin("word-count", tmp_path)
    assert (project / "README.md").read_text(encoding="utf-8") == before


def test_new_stage_registers_the_stage(tmp_path: Path) -> None:
    """`new stage` adds a module, its tests and an entry in the hook that stageflow calls."""
    new_plugin("word-count", tmp_path)
    project = tmp_path / "stageflow-word-count"
    new_stage("dedupe-lines", project)
    assert (project / "stageflow_word_count" / "dedupe_lines.py").is_file()
    assert (project / "tests" / "test_dedupe_lines.py").is_file()
    probe = subprocess.run(
        [
            sys.executable, "-c",
            "import stageflow_word_count as p\n"
            "from stageflow.plugins import load_registry\n"
            "r = load_registry(load_entrypoints=False, plugins=[p])\n"
            "print(sorted(r.stages), r.problems)",
        ],
        cwd=project, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": "."},
    )  # fmt: skip
    assert probe.stdout.strip() == "['dedupe-lines', 'word-count'] []", probe.stderr
    init = (project / "stageflow_word_count" / "__init__.py").read_text(encoding="utf-8")
    imports = [line for line in init.splitlines() if line.startswith("from stageflow_word_count")]
    assert imports == sorted(imports) and len(imports) == 2  # the block stays isort-clean


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("none", ["new", "plugin", "Word Count"], "is not a usable name"),
        ("none", ["new", "plugin", "stageflow-word-count"], "give 'word-count'"),
        ("none", ["new", "plugin", "stageflow_word_count"], "give 'word_count'"),
        ("none", ["new", "stage", "extra"], "cannot read"),
        ("none", ["new", "plugin", "x", "--dir", "missing/d"], "'missing/d' is not a directory"),
        ("plugin", ["new", "stage", "word-count"], "already exists"),
        ("unmarked", ["new", "stage", "extra"], "lacks the marker comments"),
    ],
)
def test_new_refuses_with_one_sentence(
    tmp_path: Path, setup: str, args: list[str], message: str
) -> None:
    """Bad names, no project, an existing stage, a hook without markers: exit 2, one line."""
    project = tmp_path
    if setup != "none":
        new_plugin("word-count", tmp_path)
        project = tmp_path / "stageflow-word-count"
    if setup == "unmarked":
        init = project / "stageflow_word_count" / "__init__.py"
        init.write_text(init.read_text(encoding="utf-8").replace(IMPORTS_MARKER, ""))
    result = run_stageflow(*args, cwd=project)
    assert result.returncode == 2
    assert result.stderr.startswith("stageflow: error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1
