"""The html page as a document: self-contained, data embedded, nothing injected."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

import pytest

from stageflow.graph import GraphvizError
from stageflow.graph.html import render_html
from stageflow.graph.json import graph_to_dict
from tests.graph import cases


class Tags(HTMLParser):
    """Collects start tags with their attributes, and the text of each script element."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


def parse(page: str) -> Tags:
    tags = Tags()
    tags.feed(page)
    tags.close()
    return tags


@pytest.mark.parametrize("use_graphviz", [True, False], ids=["graphviz", "fallback"])
def test_page_is_self_contained(use_graphviz: bool, request: pytest.FixtureRequest) -> None:
    """No tag loads anything: no src, no link, no external href; a CSP forbids fetching."""
    if use_graphviz:
        request.getfixturevalue("dot_program")
    page = render_html(cases.wordcount(), use_graphviz=use_graphviz)
    tags = parse(page)
    names = {tag for tag, _ in tags.tags}
    assert not names & {"link", "img", "iframe", "object", "embed", "image", "use"}
    for tag, attrs in tags.tags:
        assert "src" not in attrs, tag
        assert not str(attrs.get("href", "")).startswith(("http", "//")), tag
    assert "default-src 'none'" in page


@pytest.mark.parametrize("use_graphviz", [True, False], ids=["graphviz", "fallback"])
def test_hostile_names_inject_no_tag(use_graphviz: bool, request: pytest.FixtureRequest) -> None:
    """A stage named `</script><img onerror=…>` adds no element: two scripts, no img."""
    if use_graphviz:
        request.getfixturevalue("dot_program")
    page = render_html(cases.hostile(), use_graphviz=use_graphviz)
    tags = parse(page)
    assert [tag for tag, _ in tags.tags].count("script") == 2
    assert "img" not in {tag for tag, _ in tags.tags}
    assert all(not key.startswith("on") for _, attrs in tags.tags for key in attrs)
    assert json.loads(tags.scripts[0]) == graph_to_dict(cases.hostile())


def test_embedded_data_is_the_json_model(any_graph: Any) -> None:
    """The page embeds the stageflow-graph/1 data the click handler reads schemas from."""
    tags = parse(render_html(any_graph, use_graphviz=False))
    (data_tag,) = [a for t, a in tags.tags if t == "script" and a.get("type")]
    assert data_tag == {"type": "application/json", "id": "stageflow-graph-data"}
    assert json.loads(tags.scripts[0]) == graph_to_dict(any_graph)


def test_fallback_drawing_marks_stages_and_mismatches() -> None:
    """Without Graphviz the page draws clickable stage boxes and a red mismatch arrow."""
    page = render_html(cases.mismatch(), use_graphviz=False)
    tags = parse(page)
    boxes = [a for t, a in tags.tags if a.get("data-stage-index") is not None]
    assert [b["data-stage-index"] for b in boxes] == ["0", "1"]
    assert ("div", {"class": "arrow mismatch"}) in tags.tags
    assert "✗ mismatch: missing &#x27;words&#x27;" in page
    assert "<svg" not in page


def test_requiring_graphviz_without_dot_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    """use_graphviz=True without `dot` raises the one-sentence GraphvizError."""
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(GraphvizError, match="apt-get install graphviz"):
        render_html(cases.wordcount(), use_graphviz=True)
