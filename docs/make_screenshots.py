"""Make the README's pictures with the project's own tooling: ``python docs/make_screenshots.py``.

- docs/progress.png: the live display of a seed run halfway through, as rich draws it,
  exported to SVG by rich and rendered to PNG by headless Chromium;
- docs/seed-run-report.json: that run's report;
- docs/graph-report.png: ``stageflow graph --report`` of it, rendered by Graphviz.

Needs Chromium and Graphviz (``.ci/run`` installs both) and the seed plugin.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from stageflow import Pipeline
from stageflow.observe import Progress
from stageflow.observe.progress import InputGauge, LiveDisplay

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
SEED = REPO / "examples" / "seed"
COPIES = 15  # the 2,000-line sample this many times: a run long enough to catch midway


def capture_progress(workdir: Path) -> tuple[str, str]:
    """Run the seed pipeline with the live display; return an SVG of it midway and the report."""
    source = workdir / "input.jsonl"
    source.write_bytes((SEED / "sample.jsonl").read_bytes() * COPIES)
    pipeline = Pipeline.from_file(SEED / "pipeline.yaml")
    shot = Console(record=True, width=110, file=io.StringIO(), force_terminal=True)
    with source.open("rb") as handle:
        run = pipeline.run(handle, batch_size=64)
        gauge = InputGauge(source.stat().st_size, handle.tell)
        display = LiveDisplay(Console(file=io.StringIO(), width=110), gauge)
        taken = False

        def watch(progress: Progress) -> None:
            nonlocal taken
            display(progress)
            fraction = gauge.fraction() or 0.0
            if not taken and 0.4 <= fraction < 1 and progress.results:
                shot.print(display.picture)
                taken = True

        run.on_progress(watch)
        for _ in run:
            pass
    if not taken:
        shot.print(display.picture)
    svg = shot.export_svg(title="stageflow run examples/seed/pipeline.yaml -i input.jsonl -o out")
    return svg, run.report.to_json()


def svg_to_png(svg: str, png: Path, workdir: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("Chromium is needed to render the SVG (apt-get install chromium)")
    size = re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg)
    assert size is not None, "rich's SVG has a viewBox"
    width, height = (int(float(value)) + 1 for value in size.groups())
    page = workdir / "progress.svg"
    page.write_text(svg, encoding="utf-8")
    subprocess.run(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--window-size={width},{height}", f"--screenshot={png}", page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="stageflow-shots-") as tmp:
        workdir = Path(tmp)
        svg, report = capture_progress(workdir)
        svg_to_png(svg, DOCS / "progress.png", workdir)
    (DOCS / "seed-run-report.json").write_text(report, encoding="utf-8")
    subprocess.run(
        [
            sys.executable, "-m", "stageflow", "graph", str(SEED / "pipeline.yaml"),
            "--report", str(DOCS / "seed-run-report.json"), "-o", str(DOCS / "graph-report.png"),
        ],
        check=True,
        cwd=REPO,
    )
    for name in ("progress.png", "seed-run-report.json", "graph-report.png"):
        print(f"wrote {DOCS / name}")


if __name__ == "__main__":
    main()
