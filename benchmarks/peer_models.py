"""The peer pipelines with pydantic models on every hop, as a stageflow user would type them.

Each step takes the Input model and builds the next model, so every hop is validated; the
stageflow stages (:mod:`benchmarks.peer_stages`) and the validating Pool
(:mod:`benchmarks.peer_pool`) run these very functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel

from benchmarks.peer_work import TOPOLOGY, level, scale, sentences, summary, token_stats, tokenize


class Document(BaseModel):
    id: str
    text: str


class Sentence(BaseModel):
    id: str
    doc: str
    text: str


class Tokens(BaseModel):
    id: str
    doc: str
    tokens: list[str]


class SentenceStats(BaseModel):
    id: str
    doc: str
    words: int
    unique: int
    longest: str
    mean_length: float


class Series(BaseModel):
    id: str
    values: list[float]
    source: str


class Scaled(BaseModel):
    id: str
    source: str
    values: list[float]


class Summary(BaseModel):
    id: str
    source: str
    mean: float
    variance: float
    trend: Literal["increasing", "decreasing", "unknown"]


class Labelled(Summary):
    level: Literal["low", "mid", "high"]


def split_document(doc: Document) -> list[Sentence]:
    return [Sentence(id=f"{doc.id}.{n}", doc=doc.id, text=s)
            for n, s in enumerate(sentences(doc.text))]


def tokenize_sentence(sentence: Sentence) -> Tokens:
    return Tokens(id=sentence.id, doc=sentence.doc, tokens=tokenize(sentence.text))


def sentence_stats(tokens: Tokens) -> SentenceStats:
    words, unique, longest, mean = token_stats(tokens.tokens)
    return SentenceStats(id=tokens.id, doc=tokens.doc, words=words, unique=unique,
                         longest=longest, mean_length=mean)


def scale_series(series: Series) -> Scaled:
    return Scaled(id=series.id, source=series.source, values=scale(series.values))


def summarise(scaled: Scaled) -> Summary:
    mean, variance, trend = summary(scaled.values)
    return Summary(id=scaled.id, source=scaled.source, mean=mean, variance=variance, trend=trend)  # type: ignore[arg-type]


def label(item: Summary) -> Labelled:
    return Labelled(**dict(item), level=level(item.mean))  # type: ignore[arg-type]


#: name -> (Input model, step, Output model), per pipeline.
STEPS: dict[str, dict[str, tuple[type[BaseModel], Callable[[Any], Any], type[BaseModel]]]] = {
    "text": {
        "split": (Document, split_document, Sentence),
        "tokenize": (Sentence, tokenize_sentence, Tokens),
        "stats": (Tokens, sentence_stats, SentenceStats),
    },
    "numeric": {
        "scale": (Series, scale_series, Scaled),
        "summarise": (Scaled, summarise, Summary),
        "label": (Summary, label, Labelled),
    },
}


def chain(pipeline: str) -> Callable[[bytes], list[bytes]]:
    """All stages of ``pipeline`` as one function: a JSON line in, result JSON lines out."""
    stages = [STEPS[pipeline][name] for name, _ in TOPOLOGY[pipeline]]
    first = stages[0][0]

    def run(line: bytes) -> list[bytes]:
        items: list[Any] = [first.model_validate_json(line)]
        for _, step, _ in stages:
            outs: list[Any] = []
            for item in items:
                result = step(item)
                outs.extend(result if isinstance(result, list) else (result,))
            items = outs
        return [item.model_dump_json().encode() for item in items]

    return run
