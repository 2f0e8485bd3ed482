"""The html page in a real headless Chromium: it draws the graph and a click shows schemas.

Chromium is driven over the DevTools protocol on a pipe (tests/graph/cdp.py); clicks are
trusted mouse events at the centre of the stage's drawn box, so they prove the stage is
visible, on top and wired to the schema panel, not only that a handler exists.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stageflow.graph.dot import MISMATCH_COLOR
from stageflow.graph.html import render_html
from stageflow.graph.model import Graph, visible
from tests.graph import cases, stages
from tests.graph.cdp import Browser, Page, find_chromium

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """One headless Chromium for the module; skipped (with the reason) if none is installed."""
    executable = find_chromium()
    if executable is None:
        pytest.skip("Chromium is not installed (apt-get install chromium); CI installs it")
    chromium = Browser(executable, tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield chromium
    finally:
        chromium.close()


def open_page(browser: Browser, graph: Graph, path: Path, *, use_graphviz: bool) -> Page:
    path.write_text(render_html(graph, use_graphviz=use_graphviz), encoding="utf-8")
    return browser.open(path.as_uri())


def schema_shown(page: Page, which: str) -> Any:
    return json.loads(page.evaluate(f"document.getElementById('schema-{which}').textContent"))


@pytest.mark.parametrize("use_graphviz", [True, False], ids=["graphviz", "fallback"])
def test_click_on_stage_shows_its_schemas(
    browser: Browser, tmp_path: Path, use_graphviz: bool, request: pytest.FixtureRequest
) -> None:
    """The graph is drawn; clicking a stage shows its Input, Output and Config schemas."""
    if use_graphviz:
        request.getfixturevalue("dot_program")
    page = open_page(browser, cases.wordcount(), tmp_path / "g.html", use_graphviz=use_graphviz)
    stage = '[data-stage-index="{}"]'
    sizes = page.evaluate(
        "[...document.querySelectorAll('[data-stage-index]')]"
        ".map(el => { const r = el.getBoundingClientRect(); return [r.width, r.height]; })"
    )
    assert len(sizes) == 2 and all(w > 40 and h > 20 for w, h in sizes)
    assert page.evaluate("document.getElementById('details').hidden") is True

    page.click(stage.format(1))
    assert page.evaluate("document.getElementById('details').hidden") is False
    assert page.evaluate("document.getElementById('detail-name').textContent") == "count"
    assert schema_shown(page, "input") == stages.Tokens.model_json_schema()
    assert schema_shown(page, "output") == stages.Counts.model_json_schema()
    assert "no configuration" in page.evaluate(
        "document.getElementById('schema-config').textContent"
    )

    page.click(stage.format(0))
    assert page.evaluate("document.getElementById('detail-name').textContent") == "split"
    assert schema_shown(page, "input") == stages.Document.model_json_schema()
    assert schema_shown(page, "config") == stages.SplitConfig.model_json_schema()
    assert page.evaluate("document.querySelectorAll('.selected').length") >= 1

    assert page.exceptions() == []
    assert page.evaluate("performance.getEntriesByType('resource').length") == 0


def test_mismatch_edge_is_red_and_listed(
    browser: Browser, tmp_path: Path, dot_program: str
) -> None:
    """The mismatched edge renders red, and clicking its stage lists the mismatch."""
    page = open_page(browser, cases.mismatch(), tmp_path / "m.html", use_graphviz=True)
    stroke = page.evaluate("getComputedStyle(document.querySelector('#edge-0-1 path')).stroke")
    red = tuple(int(MISMATCH_COLOR[i : i + 2], 16) for i in (1, 3, 5))
    assert stroke == "rgb({}, {}, {})".format(*red)
    page.click('[data-stage-index="1"]')
    problems = page.evaluate("document.getElementById('detail-problems').textContent")
    assert "✗" in problems and "'words'" in problems


def test_hostile_names_render_as_text(browser: Browser, tmp_path: Path, dot_program: str) -> None:
    """A stage named like markup shows as text: no element is injected, no script runs."""
    page = open_page(browser, cases.hostile(), tmp_path / "h.html", use_graphviz=True)
    assert page.evaluate("document.images.length + document.querySelectorAll('img').length") == 0
    assert page.evaluate("document.scripts.length") == 2
    assert page.evaluate("document.querySelector('h1').textContent") == visible(stages.HOSTILE)
    page.click('[data-stage-index="1"]')
    assert page.evaluate("document.getElementById('detail-name').textContent") == stages.HOSTILE
    assert page.exceptions() == []


@pytest.mark.parametrize("use_graphviz", [True, False], ids=["graphviz", "fallback"])
def test_click_on_stage_shows_its_run_numbers(
    browser: Browser, tmp_path: Path, use_graphviz: bool, request: pytest.FixtureRequest
) -> None:
    """With a report drawn, clicking a stage lists its records, busy time and dead letters."""
    if use_graphviz:
        request.getfixturevalue("dot_program")
    page = open_page(
        browser, cases.wordcount_report(), tmp_path / "r.html", use_graphviz=use_graphviz
    )
    page.click('[data-stage-index="0"]')
    shown = page.evaluate("document.getElementById('detail-run').textContent")
    assert "records in1,200" in shown and "records out1,190" in shown
    assert "75% of all stages), the slowest stage" in shown
    assert "ValidationError 10" in shown
    page.click('[data-stage-index="1"]')
    shown = page.evaluate("document.getElementById('detail-run').textContent")
    assert "records in1,190" in shown and "RuntimeError 3" in shown
    assert page.exceptions() == []
