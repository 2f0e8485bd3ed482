"""Rewrite the golden files: ``python -m tests.graph.regen`` from the repository root.

Run it after an intended change to a renderer, then review the diff of tests/graph/golden/
like any other change.
"""

from __future__ import annotations

from stageflow.graph.mermaid import render_mermaid
from stageflow.graph.text import render_text
from tests.graph.cases import CASES, GOLDEN

RENDERERS = {"txt": render_text, "mmd": render_mermaid}
"""Golden file suffix → renderer; text and Mermaid are the formats compared byte for byte."""


def main() -> None:
    GOLDEN.mkdir(exist_ok=True)
    for name, make in CASES.items():
        graph = make()
        for suffix, renderer in RENDERERS.items():
            path = GOLDEN / f"{name}.{suffix}"
            path.write_text(renderer(graph), encoding="utf-8")
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
