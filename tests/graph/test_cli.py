"""`stageflow graph` as a user runs it: a subprocess per call, real files, exit statuses."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.graph.cases import PIPELINES, REPO
from tests.graph.conftest import run_cli

WORDCOUNT = str(PIPELINES / "wordcount.yaml")
MISMATCH = str(PIPELINES / "mismatch.yaml")


def check_output(fmt: str, data: bytes) -> None:
    """Assert ``data`` looks like a drawing in ``fmt``."""
    if fmt == "png":
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
        return
    text = data.decode("utf-8")
    if fmt == "text":
        assert "│ split" in text and "Document → Tokens" in text
    elif fmt == "dot":
        assert text.startswith("digraph pipeline {")
    elif fmt == "mermaid":
        assert "flowchart TB" in text
    elif fmt == "svg":
        assert ET.fromstring(data).tag == "{http://www.w3.org/2000/svg}svg"
    elif fmt == "html":
        assert text.startswith("<!DOCTYPE html>") and "<svg" in text
    elif fmt == "json":
        assert json.loads(text)["format"] == "stageflow-graph/1"


def test_default_is_text_on_stdout() -> None:
    """Without options the text drawing goes to stdout and the exit status is 0."""
    done = run_cli("graph", WORDCOUNT)
    assert done.returncode == 0, done.stderr
    check_output("text", done.stdout)
    assert done.stderr == b""


@pytest.mark.parametrize("fmt", ["text", "dot", "mermaid", "svg", "png", "html", "json"])
def test_each_format_writes_output_file(fmt: str, tmp_path: Path, dot_program: str) -> None:
    """--format F -o FILE writes that format to FILE, prints nothing, and exits 0."""
    out = tmp_path / "drawing.out"
    done = run_cli("graph", WORDCOUNT, "--format", fmt, "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout == b""
    check_output(fmt, out.read_bytes())


@pytest.mark.parametrize(("suffix", "fmt"), [("svg", "svg"), ("mmd", "mermaid"), ("json", "json")])
def test_format_follows_output_extension(
    suffix: str, fmt: str, tmp_path: Path, dot_program: str
) -> None:
    """Without --format, -o FILE's extension picks the format."""
    out = tmp_path / f"drawing.{suffix}"
    done = run_cli("graph", WORDCOUNT, "-o", str(out))
    assert done.returncode == 0, done.stderr
    check_output(fmt, out.read_bytes())


def test_mismatch_is_drawn_and_exits_0() -> None:
    """A schema mismatch is drawn with its marker, noted on stderr, and still exits 0."""
    done = run_cli("graph", MISMATCH, "--format", "mermaid")
    assert done.returncode == 0, done.stderr
    assert "✗ mismatch: missing 'words'" in done.stdout.decode()
    assert b"1 schema mismatch drawn" in done.stderr


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        ("unknown.yaml", "unknown stage 'no-such-stage'"),
        ("broken.yaml", "is not valid YAML"),
        ("missing.yaml", "cannot read pipeline file"),
    ],
)
def test_invalid_pipeline_is_one_line_and_exit_2(pipeline: str, message: str) -> None:
    """An unknown stage, bad YAML or missing file: one line on stderr, nothing out, exit 2."""
    done = run_cli("graph", str(PIPELINES / pipeline))
    assert done.returncode == 2
    assert done.stdout == b""
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stageflow: error: ") and message in lines[0]


@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_image_without_dot_names_the_package_and_exits_2(fmt: str, tmp_path: Path) -> None:
    """With no `dot` on PATH, svg/png print one sentence naming Graphviz, write no file, exit 2."""
    out = tmp_path / f"drawing.{fmt}"
    done = run_cli("graph", WORDCOUNT, "-o", str(out), env={"PATH": str(tmp_path)})
    assert done.returncode == 2
    assert done.stderr.decode() == (
        f"stageflow: error: the {fmt} format needs Graphviz's `dot` program, which was not "
        "found on PATH; install it with `apt-get install graphviz` (macOS: `brew install "
        "graphviz`) or use --format dot, mermaid or text\n"
    )
    assert not out.exists()


def test_html_without_dot_falls_back_and_exits_0(tmp_path: Path) -> None:
    """With no `dot` on PATH, html still works with its own HTML/CSS drawing."""
    out = tmp_path / "drawing.html"
    done = run_cli("graph", WORDCOUNT, "-o", str(out), env={"PATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    page = out.read_text(encoding="utf-8")
    assert "Drawn without Graphviz" in page and 'data-stage-index="1"' in page


def test_unwritable_output_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """-o into a missing directory fails with one sentence and exit 2."""
    done = run_cli("graph", WORDCOUNT, "-o", str(tmp_path / "no" / "such" / "g.txt"))
    assert done.returncode == 2
    assert done.stderr.decode().startswith("stageflow: error: cannot write ")


def test_an_unknown_output_extension_is_refused(tmp_path: Path) -> None:
    """-o graph.bogus without --format exits 2 naming the known extensions, writing nothing."""
    out = tmp_path / "graph.bogus"
    done = run_cli("graph", WORDCOUNT, "-o", str(out))
    assert done.returncode == 2
    assert done.stderr.decode() == (
        f"stageflow: error: cannot tell the format of '{out}' from its extension; name a file "
        "ending in .txt, .dot, .gv, .mmd, .mermaid, .svg, .png, .html, .htm, .json, or give "
        "--format\n"
    )
    assert not out.exists()
    assert run_cli("graph", WORDCOUNT, "-o", str(out), "--format", "text").returncode == 0


def test_png_refuses_a_terminal() -> None:
    """png to a terminal stdout is refused with a hint to use -o, exit 2."""
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "stageflow", "graph", WORDCOUNT, "--format", "png"],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=follower,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert done.returncode == 2
    assert b"png is binary" in done.stderr


GUARD = """
import json, os, sys
import psutil
spawned, sockets = [], []

def audit(event, args):
    if event in ("subprocess.Popen", "os.posix_spawn", "os.exec", "os.spawn"):
        spawned.append(os.path.basename(str(args[0])))
    elif event in ("os.fork", "os.forkpty", "os.system"):
        spawned.append(event)
    elif event in ("socket.bind", "socket.connect"):
        sockets.append(event)

sys.addaudithook(audit)
from stageflow.cli import main
status = main(sys.argv[1:])
report = {
    "status": status,
    "spawned": spawned,
    "sockets": sockets,
    # A ZeroMQ context or a reactor thread pool would leave native threads behind.
    "threads": psutil.Process().num_threads(),
    "reactor": "twisted.internet.reactor" in sys.modules,
    "children": len(psutil.Process().children(recursive=True)),
}
with open(os.environ["GRAPH_GUARD_REPORT"], "w") as f:
    json.dump(report, f)
"""


@pytest.mark.parametrize(("fmt", "allowed"), [("text", []), ("json", []), ("svg", ["dot"])])
def test_runs_nothing(fmt: str, allowed: list[str], tmp_path: Path, dot_program: str) -> None:
    """No worker, fork, socket, reactor or ZeroMQ thread; images spawn only Graphviz's dot."""
    report = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            GUARD,
            "graph",
            WORDCOUNT,
            "--format",
            fmt,
            "-o",
            str(tmp_path / "g"),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "GRAPH_GUARD_REPORT": str(report)},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(report.read_text()) == {
        "status": 0,
        "spawned": allowed,
        "sockets": [],
        "threads": 1,
        "reactor": False,
        "children": 0,
    }


def test_the_cli_offers_every_format_and_loads_the_drawing_code_only_to_draw() -> None:
    """`graph --format` lists stageflow.graph's formats; building the CLI imports no graph code."""
    from stageflow.cli import graph as graph_command
    from stageflow.graph import FORMATS

    assert graph_command.FORMATS == FORMATS
    probe = (
        "import sys; from stageflow.cli import build_parser; build_parser(); "
        "print(sorted(m for m in sys.modules if m.startswith('stageflow.graph')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert done.stdout.strip() == "[]"
