"""Stages that exercise every path of the per-record code: fan-out, filter, raise, bad output."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, Field

import stageflow


class Line(BaseModel):
    id: str
    text: str


class Word(BaseModel):
    id: str
    word: str


class LongWord(BaseModel):
    id: str
    word: str = Field(min_length=2, description="single letters fail validation here")


class Letters(BaseModel):
    id: str
    letters: int


class WordsConfig(BaseModel):
    fail_on: str = "boom"
    emit_total: bool = True


class Words(stageflow.Stage):
    """Line -> one Word per word; "skip" is dropped; special texts misbehave."""

    name = "kit-words"
    Input = Line
    Output = Word
    Config = WordsConfig
    config: WordsConfig

    def setup(self) -> None:
        self.seen = 0

    def process(self, item: Line) -> Any:
        self.seen += 1
        if item.text == self.config.fail_on:
            raise RuntimeError(f"cannot split {item.text!r}")
        if item.text == "bad-dict":
            return {"id": item.id}
        if item.text == "wrong-type":
            return 42
        if item.text == "sleep":
            time.sleep(60)  # cut short by the stage timeout
        return self._words(item)

    def _words(self, item: Line) -> Iterator[Word]:
        for index, word in enumerate(item.text.split()):
            if word != "skip":
                yield Word(id=f"{item.id}.{index}", word=word)

    def finish(self) -> Iterator[Word]:
        if self.config.emit_total:
            yield Word(id="total", word=f"seen-{self.seen}")


class Count(stageflow.Stage):
    """LongWord -> Letters; "none" is filtered, "ouch" raises, finish() fails on request."""

    name = "kit-count"
    Input = LongWord
    Output = Letters

    def process(self, item: LongWord) -> Letters | None:
        if item.word == "none":
            return None
        if item.word == "ouch":
            raise ValueError("ouch is not a word")
        return Letters(id=item.id, letters=len(item.word))

    def finish(self) -> None:
        raise RuntimeError("finish() of kit-count always fails")
