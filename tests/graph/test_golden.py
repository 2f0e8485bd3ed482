"""Text and Mermaid drawings compared byte for byte with reviewed golden files."""

from __future__ import annotations

import pytest

from tests.graph.cases import CASES, GOLDEN, REGEN_COMMAND
from tests.graph.regen import RENDERERS


@pytest.mark.parametrize("suffix", sorted(RENDERERS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_golden_file(case: str, suffix: str) -> None:
    """The drawing equals tests/graph/golden/<case>.<suffix> exactly."""
    path = GOLDEN / f"{case}.{suffix}"
    actual = RENDERERS[suffix](CASES[case]())
    expected = path.read_text(encoding="utf-8") if path.exists() else None
    assert actual == expected, (
        f"{path} differs from the current output; if the change is intended, run "
        f"`{REGEN_COMMAND}` from the repository root and review the diff"
    )
