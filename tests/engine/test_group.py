"""The fused group runner, without processes: stages chained in memory, counted per stage."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, model_validator

import stageflow
from stageflow.engine.group import GroupRunner
from stageflow.engine.runner import SLICE_ROOTS, Pending, StageRunner
from tests.engine.stages import (
    CountWords,
    DropEmpty,
    FanOut,
    Line,
    Scale,
    ScaleConfig,
    Split,
    SplitConfig,
    Words,
)


def _run(runner: StageRunner | GroupRunner, records: list[bytes]) -> Pending:
    ids: list[int] = []
    for seq in range(1, len(records) + 1):
        ids += (seq, 0, 1000 + seq)
    pending = Pending()
    runner.run_batch(ids, records, pending)
    return pending


def _chain(*runners: StageRunner) -> list[bytes]:
    """What the stages give when each runs alone and its frame feeds the next."""
    records = [b'{"id":"1","text":"a b c"}', b'{"id":"2","text":""}', b'{"id":"3","text":"d"}']
    for runner in runners:
        records = _run(runner, records).records
    return records


def _acks_balance(pending: Pending, roots: int) -> bool:
    """Every root's tag XOR its ack and its children's tags is zero, as the tracker requires."""
    balance = {root: 1000 + root for root in range(1, roots + 1)}
    for index in range(0, len(pending.acks), 3):
        root, _, value = pending.acks[index : index + 3]
        balance[root] ^= value
    for index in range(0, len(pending.ids), 3):
        root, _, tag = pending.ids[index : index + 3]
        balance[root] ^= tag
    return not any(balance.values())


def _group() -> GroupRunner:
    return GroupRunner(
        [
            StageRunner(Split, "split", SplitConfig(fail_on="boom")),
            StageRunner(DropEmpty, "drop"),
            StageRunner(FanOut, "fan"),
            StageRunner(Split, "split2", SplitConfig()),
            StageRunner(CountWords, "count"),
        ]
    )


def test_group_gives_what_the_stages_give_apart() -> None:
    """A fused group's output equals its stages run one by one, with a balanced ack per root."""
    records = [b'{"id":"1","text":"a b c"}', b'{"id":"2","text":""}', b'{"id":"3","text":"d"}']
    pending = _run(_group(), records)
    apart = _chain(
        StageRunner(Split, "split", SplitConfig()),
        StageRunner(DropEmpty, "drop", trusted_input=True),
        StageRunner(FanOut, "fan", trusted_input=True),
        StageRunner(Split, "split2", SplitConfig(), trusted_input=True),
        StageRunner(CountWords, "count", trusted_input=True),
    )
    assert pending.records == apart and len(apart) == 4
    # Only the roots that left no output are acknowledged; the others balance by their tags.
    with_outputs = {pending.ids[i] for i in range(0, len(pending.ids), 3)}
    acked = [pending.acks[i] for i in range(0, len(pending.acks), 3)]
    assert sorted(acked) == sorted({1, 2, 3} - with_outputs) and acked
    assert _acks_balance(pending, 3)


def test_a_frame_longer_than_a_slice_gives_what_one_slice_would() -> None:
    """A frame of several slices (run_chain cuts it) comes out in order, every root
    balanced, its dead letters under the right stage and line, its counts whole."""
    count = 3 * SLICE_ROOTS + 5
    records = [
        b'{"id":"%d","text":"%s"}' % (n, b"boom" if n % 37 == 0 else b"w%d x" % n if n % 5 else b"")
        for n in range(1, count + 1)
    ]
    pending = _run(_group(), records)
    apart = [_run(_group(), [record]) for record in records]
    assert pending.records == [out for one in apart for out in one.records]
    assert [entry["line"] for _, _, entry in pending.dead] == [37, 74]
    assert {entry["stage"] for _, _, entry in pending.dead} == {"split"}
    assert pending.processed["split"] == count and _acks_balance(pending, count)


def test_group_counts_each_stage_as_if_unfused() -> None:
    """processed counts the records that entered each stage of the group."""
    pending = _run(_group(), [b'{"id":"1","text":"a b c"}', b'{"id":"2","text":""}'])
    assert pending.processed == {"split": 2, "drop": 2, "fan": 1, "split2": 3, "count": 3}


def test_group_dead_letters_name_the_failing_stage_and_line() -> None:
    """A record failing in the middle of a group is dead-lettered under that stage and line."""
    group = GroupRunner(
        [
            StageRunner(FanOut, "fan", trusted_input=True),
            StageRunner(Split, "inner", SplitConfig(fail_on="boom"), retries=1),
        ]
    )
    pending = _run(group, [b'{"id":"1","words":["ok","boom"]}', b'{"id":"2","words":["x"]}'])
    ((root, _, entry),) = pending.dead
    assert (root, entry["line"], entry["stage"]) == (1, 1, "inner")
    assert entry["record"] == {"id": "1.1", "text": "boom"}
    assert "after 2 attempts" in entry["message"]
    assert len(pending.records) == 2 and _acks_balance(pending, 2)


class Loose(BaseModel):
    id: str
    words: list[str]
    note: str = "extra"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    words: list[str]


class Annotate(stageflow.Stage):
    name = "test-annotate"
    Input = Words
    Output = Loose

    def process(self, item: Words) -> Loose:
        return Loose(id=item.id, words=item.words)


class Identity(stageflow.Stage):
    name = "test-identity"
    Input = Words
    Output = Words

    def process(self, item: Words) -> Any:
        return item


class Pickier(stageflow.Stage):
    name = "test-pickier"
    Input = Strict
    Output = Strict

    def process(self, item: Strict) -> Strict:
        return item


def test_same_class_is_handed_over_as_is() -> None:
    """When the next Input is the class the stage returned, the very instance goes on."""
    seen: list[Any] = []

    class Keep(Identity):
        def process(self, item: Words) -> Any:
            seen.append(item)
            return item

    group = GroupRunner([StageRunner(Split, "split", SplitConfig()), StageRunner(Keep, "keep")])
    first = group.members[0]
    made: list[Any] = []
    original = first._stage_process

    def spy(item: Line) -> Any:
        made.append(original(item))
        return made[-1]

    first._stage_process = spy
    _run(group, [b'{"id":"1","text":"a"}'])
    assert seen[0] is made[0]


def test_other_classes_are_validated_from_the_fields_as_over_the_wire() -> None:
    """A different next Input is validated from the Output's fields: extra='forbid' still bites."""
    group = GroupRunner(
        [StageRunner(Annotate, "annotate", trusted_input=True), StageRunner(Pickier, "picky")]
    )
    pending = _run(group, [b'{"id":"1","words":["a"]}'])
    ((_, _, entry),) = pending.dead
    assert entry["stage"] == "picky" and entry["error"] == "ValidationError"
    assert entry["errors"][0]["type"] == "extra_forbidden"
    assert entry["record"] == {"id": "1", "words": ["a"], "note": "extra"}
    apart = _run(
        StageRunner(Pickier, "picky", trusted_input=True),
        [b'{"id":"1","words":["a"],"note":"extra"}'],
    )
    assert apart.dead[0][2]["errors"][0]["type"] == "extra_forbidden"


def test_group_finish_runs_final_outputs_through_the_rest() -> None:
    """A member's finish() outputs pass through the stages after it, in flow order."""

    class Tail(Identity):
        def finish(self) -> Words:
            return Words(id="tail", words=["p", "q"])

    group = GroupRunner([StageRunner(Tail, "tail"), StageRunner(CountWords, "count")])
    records, dead = group.finish()
    assert records == [b'{"id":"tail","words":2}'] and dead == []


def test_a_float_json_cannot_hold_is_refused_where_it_was_made() -> None:
    """An infinite float made inside a group is dead-lettered under its stage, as over a hop."""
    group = GroupRunner(
        [
            StageRunner(Scale, "overflow", ScaleConfig(factor=10.0)),
            StageRunner(Scale, "after", ScaleConfig()),
        ]
    )
    pending = _run(group, [b'{"id":"1","value":1e308}', b'{"id":"2","value":2.5}'])
    ((_, _, entry),) = pending.dead
    assert (entry["stage"], entry["line"], entry["error"]) == ("overflow", 1, "InvalidOutput")
    assert pending.records == [b'{"id":"2","value":25.0}'] and _acks_balance(pending, 2)


class Touchy(BaseModel):
    """An Input whose validator breaks (not a ValidationError) on one value: an engine failure."""

    id: str
    text: str

    @model_validator(mode="after")
    def _break(self) -> Touchy:
        if self.text == "crash":
            raise RuntimeError("the validator itself broke")
        return self


class Echo(stageflow.Stage):
    name = "test-echo"
    Input = Touchy
    Output = Line

    def process(self, item: Touchy) -> Line:
        return Line(id=item.id, text=item.text)


def test_outputs_kept_beside_an_engine_failure_still_balance() -> None:
    """A fan-out whose one output breaks the engine keeps its other outputs, tags balanced."""
    group = GroupRunner([StageRunner(FanOut, "fan", trusted_input=True), StageRunner(Echo, "echo")])
    pending = _run(
        group, [b'{"id":"1","words":["a","crash","b"]}', b'{"id":"2","words":["crash"]}']
    )
    assert pending.records == [b'{"id":"1.0","text":"a"}', b'{"id":"1.2","text":"b"}']
    assert [(root, entry["stage"]) for root, _, entry in pending.dead] == [(1, "echo"), (2, "echo")]
    assert [pending.acks[i] for i in range(0, len(pending.acks), 3)] == [2]
    assert _acks_balance(pending, 2)


class Spread(BaseModel):
    id: str
    values: list[float]
    top: float | None = None


class Stretch(stageflow.Stage):
    """Multiplies every value: 1e308 overflows to inf, in the list or in ``top``."""

    name = "test-stretch"
    Input = Spread
    Output = Spread

    def process(self, item: Spread) -> Spread:
        top = None if item.top is None else item.top * 10
        return Spread(id=item.id, values=[v * 10 for v in item.values], top=top)


class Tagged(BaseModel):
    id: str
    weight: float = 1.0
    metadata: dict[str, Any] = {}


class Reweigh(stageflow.Stage):
    """Scales ``weight`` and the floats in ``metadata``: 1e308 overflows to inf."""

    name = "test-reweigh"
    Input = Tagged
    Output = Tagged

    def process(self, item: Tagged) -> Tagged:
        metadata = {k: v * 10 if isinstance(v, float) else v for k, v in item.metadata.items()}
        return Tagged(id=item.id, weight=item.weight * 10, metadata=metadata)


@pytest.mark.parametrize(
    ("stage", "lines", "kept"),
    [
        # Plain float fields: the quick look (strict.finite_slice_test) finds the inf in a list or
        # in an optional field, and lets a None and finite values through.
        (
            Stretch,
            [
                b'{"id":"1","values":[1.0,1e308]}',
                b'{"id":"2","values":[2.0],"top":1e308}',
                b'{"id":"3","values":[3.0],"top":null}',
                b'{"id":"4","values":[],"top":4.0}',
            ],
            [b'{"id":"3","values":[300.0],"top":null}', b'{"id":"4","values":[],"top":400.0}'],
        ),
        # A dict[str, Any], where no quick look can find the floats: the slice's JSON is
        # written at once and searched for a null; a None in the dict goes through.
        (
            Reweigh,
            [
                b'{"id":"1","metadata":{"w":1e308}}',
                b'{"id":"2","weight":1e308}',
                b'{"id":"3","metadata":{"w":2.5,"s":"kept","n":null}}',
                b'{"id":"4","metadata":{"w":1.0}}',
            ],
            [
                b'{"id":"3","weight":100.0,"metadata":{"w":250.0,"s":"kept","n":null}}',
                b'{"id":"4","weight":100.0,"metadata":{"w":100.0}}',
            ],
        ),
    ],
)
def test_floats_json_cannot_hold_are_refused_inside_a_group_where_they_were_made(
    stage: type[stageflow.Stage], lines: list[bytes], kept: list[bytes]
) -> None:
    """An inf made by the first of two fused stages is dead-lettered under it, as a hop
    would refuse it; the others go on."""
    group = GroupRunner([StageRunner(stage, "first"), StageRunner(stage, "again")])
    pending = _run(group, lines)
    dead = sorted((entry["line"], entry["stage"]) for _, _, entry in pending.dead)
    assert dead == [(1, "first"), (2, "first")]
    assert all("written as null" in entry["message"] for _, _, entry in pending.dead)
    assert pending.records == kept
    assert _acks_balance(pending, 4)


class Batch(BaseModel):
    id: str
    n: int


class Part(BaseModel):
    id: str
    k: int
    x: float = 1.0


class Checked(BaseModel):
    id: str
    k: int = Field(ge=0)
    x: float


class Parts(stageflow.Stage):
    name = "test-parts"
    Input = Batch
    Output = Part

    def process(self, item: Batch) -> list[Part]:
        return [Part(id=item.id, k=k) for k in range(item.n)]


class Spoil(stageflow.Stage):
    """Part 0 gets a k the next Input refuses, part 1 a nan: two failures in one root."""

    name = "test-spoil"
    Input = Part
    Output = Part

    def process(self, item: Part) -> Part:
        if item.k == 0:
            return Part(id=item.id, k=-1)
        return Part(id=item.id, k=item.k, x=float("nan") if item.k == 1 else 2.0)


class Keep(stageflow.Stage):
    name = "test-keep"
    Input = Checked
    Output = Checked

    def process(self, item: Checked) -> Checked:
        return item


def test_a_roots_dead_letters_keep_the_order_of_its_items() -> None:
    """One root's items failing two ways at one hop (an Output the next Input refuses, then
    one with a nan) are dead-lettered in the order of the items, as unfused."""
    group = GroupRunner(
        [StageRunner(Parts, "parts"), StageRunner(Spoil, "spoil"), StageRunner(Keep, "keep")]
    )
    pending = _run(group, [b'{"id":"r1","n":3}'])
    assert [(entry["stage"], entry["error"]) for _, _, entry in pending.dead] == [
        ("keep", "ValidationError"),
        ("spoil", "InvalidOutput"),
    ]
    assert pending.records == [b'{"id":"r1","k":2,"x":2.0}']
    assert pending.processed == {"parts": 1, "spoil": 3, "keep": 2}
    assert _acks_balance(pending, 1)


class Only(BaseModel):
    a: float
    b: float | None = None


class Lists(BaseModel):
    values: list[float]
    more: tuple[float, ...] = ()


@pytest.mark.parametrize(
    ("model", "finite", "not_finite"),
    [
        (Only, [Only(a=1.0), Only(a=2.0, b=None), Only(a=0.0, b=3.5)], Only(a=1.0, b=math.inf)),
        (Lists, [Lists(values=[]), Lists(values=[1.0], more=(2.0,))], Lists(values=[math.nan])),
        (Spread, [Spread(id="x", values=[1.0], top=2.0)], Spread(id="y", values=[], top=-math.inf)),
    ],
)
def test_the_quick_look_takes_a_whole_slice(
    model: type[BaseModel], finite: list[BaseModel], not_finite: BaseModel
) -> None:
    """strict.finite_slice_test says True for a slice of finite Outputs (whichever kinds of
    plain float field the model has: then no JSON is written for it) and False as soon as one
    holds a nan or an inf."""
    from stageflow.engine.strict import finite_slice_test

    test = finite_slice_test(model)
    assert test is not None
    assert test(finite)
    assert not test([*finite, not_finite])
    assert test([])
