"""``stageflow new``: a ready plugin package, or one more stage in an existing one.

Templates are the files in ``templates/``, filled in with :class:`string.Template`
(``${name}`` placeholders). The standard library is enough here: a scaffold is a handful of
files with a few names substituted and no choices to make, and a templating engine
(copier, cookiecutter) would become a dependency of every stageflow install, worker hosts
included, for one command.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from stageflow.errors import ScaffoldError

__all__ = ["StageNames", "new_plugin", "new_stage", "stage_names"]

_NAME = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
#: The lines of a generated ``__init__.py`` that ``new stage`` inserts above.
IMPORTS_MARKER = "# stageflow new stage: stage imports above this line"
STAGES_MARKER = "        # stageflow new stage: stages above this line"


@dataclass(frozen=True)
class StageNames:
    """Every name one stage is known by, derived from the name a user typed."""

    stage: str  # what `uses:` says, e.g. "word-count"
    module: str  # the module file inside the package, e.g. "word_count"
    cls: str  # the Stage subclass, e.g. "WordCount"


def stage_names(name: str) -> StageNames:
    """Check ``name`` and derive the stage's module and class names from it."""
    if not _NAME.fullmatch(name):
        raise ScaffoldError(
            f"{name!r} is not a usable name: use lower-case letters and digits, starting with "
            "a letter, with single '-' or '_' between words (for example 'word-count')"
        )
    module = name.replace("-", "_")
    return StageNames(name, module, "".join(part.capitalize() for part in module.split("_")))


def new_plugin(name: str, directory: str | Path = ".") -> list[Path]:
    """Create ``directory/stageflow-NAME/``, a plugin package with one example stage.

    Returns the files written. Nothing is written if the target directory exists.
    """
    from stageflow import __version__

    names = stage_names(name)
    for prefix in ("stageflow-", "stageflow_"):
        if name.startswith(prefix) and len(name) > len(prefix):
            raise ScaffoldError(
                f"{name!r} would make the package stageflow-{name}; give "
                f"{name.removeprefix(prefix)!r}: `stageflow new plugin` adds the 'stageflow-' "
                "itself"
            )
    if not Path(directory).is_dir():
        raise ScaffoldError(
            f"{str(directory)!r} is not a directory; create it first, or give another --dir"
        )
    root = Path(directory) / f"stageflow-{name}"
    if root.exists():
        raise ScaffoldError(
            f"{str(root)!r} already exists; choose another plugin name or another --dir"
        )
    package = f"stageflow_{names.module}"
    values = {
        "distribution": f"stageflow-{name}",
        "plugin": name,
        "package": package,
        "stage": names.stage,
        "module": names.module,
        "cls": names.cls,
        "stageflow_version": __version__,
    }
    files = {
        "pyproject.toml": "pyproject.toml.tmpl",
        "README.md": "README.md.tmpl",
        "pipeline.yaml": "pipeline.yaml.tmpl",
        "sample.jsonl": "sample.jsonl.tmpl",
        f"{package}/__init__.py": "package_init.py.tmpl",
        f"{package}/{names.module}.py": "stage.py.tmpl",
        f"{package}/py.typed": "py.typed",
        f"tests/test_{names.module}.py": "test_stage.py.tmpl",
        "tests/test_pipeline.py": "test_pipeline.py.tmpl",
    }
    return _write(root, {path: _render(template, values) for path, template in files.items()})


def new_stage(name: str, directory: str | Path = ".") -> list[Path]:
    """Add stage NAME to the plugin project in ``directory`` and register it.

    The project is found by its pyproject.toml: the module its ``stageflow`` entry point
    names gets the new stage's import and class in its hook, between the marker comments
    ``stageflow new plugin`` put there. Returns the files written or changed; nothing is
    written when a check fails.
    """
    names = stage_names(name)
    root = Path(directory)
    package, init = _plugin_module(root)
    text = init.read_text(encoding="utf-8")
    if IMPORTS_MARKER not in text or STAGES_MARKER not in text:
        raise ScaffoldError(
            f"{str(init)!r} lacks the marker comments of `stageflow new plugin`; add the lines "
            f"{IMPORTS_MARKER!r} (after the imports) and {STAGES_MARKER.strip()!r} (in the "
            "list stageflow_register_stages returns) and run the command again"
        )
    values = {"package": package, "stage": names.stage, "module": names.module, "cls": names.cls}
    files = {
        f"{package.replace('.', '/')}/{names.module}.py": _render("stage.py.tmpl", values),
        f"tests/test_{names.module}.py": _render("test_stage.py.tmpl", values),
    }
    text = _add_import(text, f"from {package}.{names.module} import {names.cls}")
    text = text.replace(STAGES_MARKER, f"        {names.cls},\n{STAGES_MARKER}", 1)
    written = _write(root, files)
    init.write_text(text, encoding="utf-8")
    return [*written, init]


def _plugin_module(root: Path) -> tuple[str, Path]:
    """The module a plugin project's ``stageflow`` entry point names, and its file."""
    pyproject = root / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScaffoldError(
            f"cannot read {str(pyproject)!r} ({exc.strerror or exc}); run `stageflow new stage` "
            "in a plugin project made by `stageflow new plugin`, or pass its directory with --dir"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ScaffoldError(f"{str(pyproject)!r} is not valid TOML ({exc}); fix it") from exc
    entry_points = project.get("project", {}).get("entry-points", {}).get("stageflow", {})
    if len(entry_points) != 1:
        raise ScaffoldError(
            f"{str(pyproject)!r} must declare exactly one [project.entry-points.stageflow] "
            f"entry, it declares {len(entry_points)}; add the plugin module there"
        )
    (target,) = entry_points.values()
    package = str(target).partition(":")[0]
    base = root / package.replace(".", "/")
    init = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
    if not init.is_file():
        raise ScaffoldError(
            f"the entry point names module {package!r}, but {str(init)!r} does not exist; "
            "run the command in the project's root directory"
        )
    return package, init


def _add_import(text: str, statement: str) -> str:
    """Add ``statement`` to the import lines above the marker, keeping them sorted.

    Sorted, and with the blank line before the marker kept, so the block stays the way
    isort and ruff want it however many stages are added.
    """
    lines = text.split("\n")
    end = lines.index(IMPORTS_MARKER)
    while end > 0 and not lines[end - 1].strip():
        end -= 1
    start = end
    while start > 0 and lines[start - 1].startswith("from "):
        start -= 1
    lines[start:end] = sorted([*lines[start:end], statement])
    return "\n".join(lines)


def _render(template: str, values: dict[str, str]) -> str:
    text = (resources.files(__package__) / "templates" / template).read_text(encoding="utf-8")
    return Template(text).substitute(values)


def _write(root: Path, files: dict[str, str]) -> list[Path]:
    targets = {root / relative: text for relative, text in files.items()}
    existing = [str(path) for path in targets if path.exists()]
    if existing:
        raise ScaffoldError(
            f"{existing[0]!r} already exists; choose another stage name or remove the file"
        )
    for path, text in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(targets)
