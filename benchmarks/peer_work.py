"""The two peer pipelines' work as plain functions on dicts: no pydantic, no stageflow.

``text``: split each document into sentences, keep those of at least four words, tokenize
them and compute statistics per sentence (about two results per document, small records).
``numeric``: like the seed, scale each series by its maximum, summarise it (mean, population
variance, trend) and label its level (one result per series).

Every peer computes exactly this; the pydantic versions (:mod:`benchmarks.peer_models`) call
the same helpers, so every output can be checked against :func:`expected` exactly.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

Step = Callable[[dict[str, Any]], list[dict[str, Any]]]

#: Stages and worker processes per pipeline, upstream first: four processes each.
TOPOLOGY = {
    "text": (("split", 1), ("tokenize", 2), ("stats", 1)),
    "numeric": (("scale", 2), ("summarise", 1), ("label", 1)),
}

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORDS = (
    "alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "quiet", "bright", "window",
    "market", "orange", "system", "garden", "number", "silver", "morning", "engine", "paper",
    "yellow",
)


def sentences(text: str) -> list[str]:
    """The sentences of ``text`` with at least four words."""
    return [s for s in _SENTENCE_END.split(text.strip()) if len(s.split()) >= 4]


def tokenize(text: str) -> list[str]:
    return [w for w in (word.strip(".,!?;:").lower() for word in text.split()) if w]


def token_stats(tokens: list[str]) -> tuple[int, int, str, float]:
    """(words, unique words, the first longest word, mean word length to 4 places)."""
    longest = max(tokens, key=len) if tokens else ""
    mean = round(sum(map(len, tokens)) / len(tokens), 4) if tokens else 0.0
    return len(tokens), len(set(tokens)), longest, mean


def scale(values: list[float]) -> list[float]:
    top = max(values) if values else 0.0
    return [v / top for v in values] if top > 0 else list(values)


def summary(values: list[float]) -> tuple[float, float, str]:
    """(mean, population variance, trend) as the seed computes them."""
    if not values:
        return 0.0, 0.0, "unknown"
    mean = sum(values) / len(values)
    variance = sum((x - mean) ** 2 for x in values) / len(values)
    if len(values) < 2:
        return mean, variance, "unknown"
    return mean, variance, "increasing" if values[-1] > values[0] else "decreasing"


def level(mean: float) -> str:
    return "high" if mean > 0.66 else "mid" if mean > 0.33 else "low"


def _split(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"id": f"{doc['id']}.{n}", "doc": doc["id"], "text": s}
            for n, s in enumerate(sentences(doc["text"]))]


def _tokenize(sentence: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"id": sentence["id"], "doc": sentence["doc"], "tokens": tokenize(sentence["text"])}]


def _stats(tokens: dict[str, Any]) -> list[dict[str, Any]]:
    words, unique, longest, mean = token_stats(tokens["tokens"])
    return [{"id": tokens["id"], "doc": tokens["doc"], "words": words, "unique": unique,
             "longest": longest, "mean_length": mean}]


def _scale(series: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"id": series["id"], "source": series["source"], "values": scale(series["values"])}]


def _summarise(scaled: dict[str, Any]) -> list[dict[str, Any]]:
    mean, variance, trend = summary(scaled["values"])
    return [{"id": scaled["id"], "source": scaled["source"], "mean": mean,
             "variance": variance, "trend": trend}]


def _label(summarised: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**summarised, "level": level(summarised["mean"])}]


STEPS: dict[str, dict[str, Step]] = {
    "text": {"split": _split, "tokenize": _tokenize, "stats": _stats},
    "numeric": {"scale": _scale, "summarise": _summarise, "label": _label},
}


def chain(pipeline: str) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    """All stages of ``pipeline`` as one function: a record in, its results out."""
    steps = [STEPS[pipeline][name] for name, _ in TOPOLOGY[pipeline]]

    def run(record: dict[str, Any]) -> list[dict[str, Any]]:
        records = [record]
        for step in steps:
            records = [out for item in records for out in step(item)]
        return records

    return run


def records(pipeline: str, count: int, seed: int = 20261201) -> Iterator[dict[str, Any]]:
    """``count`` deterministic input records of ``pipeline``."""
    rng = random.Random(seed)
    for n in range(count):
        if pipeline == "text":
            parts = []
            for _ in range(rng.randint(1, 5)):
                words = [rng.choice(_WORDS) for _ in range(rng.randint(1, 12))]
                parts.append(" ".join(words).capitalize() + rng.choice(".!?"))
            yield {"id": f"doc-{n:07d}", "text": " ".join(parts)}
        else:
            values = [round(rng.uniform(-5.0, 100.0), 3) for _ in range(rng.randint(0, 16))]
            yield {"id": f"ser-{n:07d}", "values": values, "source": rng.choice("abcd")}


def input_file(directory: Path, pipeline: str, count: int) -> Path:
    """Write (once per directory) the input file of ``count`` records of ``pipeline``."""
    path = directory / f"{pipeline}-{count}.jsonl"
    if not path.exists():
        path.write_text("".join(json.dumps(r) + "\n" for r in records(pipeline, count)))
    return path


def canonical(lines: list[bytes] | list[str]) -> list[str]:
    """Result lines in one form whatever wrote them: keys sorted, floats as Python prints them,
    lines sorted (peers write in completion order)."""
    return sorted(json.dumps(json.loads(line), sort_keys=True) for line in lines if line.strip())


def expected(pipeline: str, count: int) -> list[str]:
    run = chain(pipeline)
    return canonical([json.dumps(out) for r in records(pipeline, count) for out in run(r)])
