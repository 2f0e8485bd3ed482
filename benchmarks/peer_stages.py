"""The peer pipelines as stageflow stages, run by benchmarks/peer_text.yaml and peer_numeric.yaml.

Each stage's process() is the step of :mod:`benchmarks.peer_models`, so stageflow runs exactly
the code the validating Pool runs.
"""

from __future__ import annotations

from typing import Any

import stageflow
from benchmarks import peer_models as m


class SplitDocument(stageflow.Stage):
    name = "peer-split"
    Input = m.Document
    Output = m.Sentence

    def process(self, item: m.Document) -> list[m.Sentence]:
        return m.split_document(item)


class Tokenize(stageflow.Stage):
    name = "peer-tokenize"
    Input = m.Sentence
    Output = m.Tokens

    def process(self, item: m.Sentence) -> m.Tokens:
        return m.tokenize_sentence(item)


class Stats(stageflow.Stage):
    name = "peer-stats"
    Input = m.Tokens
    Output = m.SentenceStats

    def process(self, item: m.Tokens) -> m.SentenceStats:
        return m.sentence_stats(item)


class Scale(stageflow.Stage):
    name = "peer-scale"
    Input = m.Series
    Output = m.Scaled

    def process(self, item: m.Series) -> m.Scaled:
        return m.scale_series(item)


class Summarise(stageflow.Stage):
    name = "peer-summarise"
    Input = m.Scaled
    Output = m.Summary

    def process(self, item: m.Scaled) -> m.Summary:
        return m.summarise(item)


class Label(stageflow.Stage):
    name = "peer-label"
    Input = m.Summary
    Output = m.Labelled

    def process(self, item: m.Summary) -> Any:
        return m.label(item)
