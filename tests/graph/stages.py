"""Stage classes the graph tests draw; pipeline files name them as ``tests.graph.stages:X``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, create_model

from stageflow import Stage
from stageflow.plugins import StageEntry, StageRegistry


class Document(BaseModel):
    """A text to count words in."""

    doc_id: int
    text: str


class Tokens(BaseModel):
    """A document split into words."""

    doc_id: int
    tokens: list[str]


class Counts(BaseModel):
    """How often each word occurs in one document."""

    doc_id: int
    counts: dict[str, int]


class Words(BaseModel):
    """What a stage that wants a `words` field reads; nothing upstream provides it."""

    doc_id: int
    words: list[str]


class SplitConfig(BaseModel):
    lowercase: bool = Field(default=True, description="Lower-case every token.")


class Split(Stage):
    name = "split"
    Input = Document
    Output = Tokens
    Config = SplitConfig

    def process(self, item: Any) -> Any:
        return Tokens(doc_id=item.doc_id, tokens=item.text.split())


class Count(Stage):
    name = "count"
    Input = Tokens
    Output = Counts

    def process(self, item: Any) -> Any:
        counts: dict[str, int] = {}
        for token in item.tokens:
            counts[token] = counts.get(token, 0) + 1
        return Counts(doc_id=item.doc_id, counts=counts)


class Tally(Stage):
    """Reads Words, so placed after Split it makes a schema mismatch on `words`."""

    name = "tally"
    Input = Words
    Output = Counts

    def process(self, item: Any) -> Any:
        return Counts(doc_id=item.doc_id, counts={w: 1 for w in item.words})


HOSTILE = (
    'a"b<c>&d|e{f}[g]\\h\ni#j;k `l` ü→ 語</script><img src=x onerror=alert(1)>'
    '%%{init: {"theme": "dark"}}%%'
)
"""Text with characters special to DOT, Mermaid, HTML, YAML and terminals."""

Hostile = create_model(f"Model{HOSTILE}", __base__=BaseModel, value=(int, ...))


class HostileStage(Stage):
    name = "hostile"
    Input = Hostile
    Output = Hostile

    def process(self, item: Any) -> Any:
        return item


def registry() -> StageRegistry:
    """A registry as if the test stages came from an installed plugin distribution."""
    stages = {
        cls.name: StageEntry(cls, "wordcount", "stageflow-wordcount", "1.2.3")
        for cls in (Split, Count, Tally, HostileStage)
    }
    return StageRegistry(stages=stages)
