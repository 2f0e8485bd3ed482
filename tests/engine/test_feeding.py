"""The feeder's frames: input stays in big frames once the in-flight window is full."""

from __future__ import annotations

from stageflow import Pipeline
from stageflow.engine.feeding import FIRST_FRAME, Feeder
from stageflow.engine.report import RunReport
from stageflow.engine.tracker import Tracker
from tests.engine.stages import CountWords, Split


def test_a_full_window_still_sends_input_in_whole_frames() -> None:
    """With the window full, input goes out in frames near batch_size, not a few records each."""
    records, batch = 20_000, 256
    pipeline = Pipeline(
        "frames",
        [
            {"name": "split", "uses": Split, "workers": 2},
            {"name": "count", "uses": CountWords, "fuse": False},
        ],
    )
    # A window of 4 frames fills at once, so nearly every record is admitted as room opens:
    # without the wait for room for whole frames, this sent about 4,700 frames, not ~100.
    run = pipeline.run(
        ({"id": str(i), "text": "a b"} for i in range(records)),
        batch_size=batch,
        max_in_flight=4 * batch,
    )
    assert sum(1 for _ in run) == records
    progress = run.progress()
    assert progress is not None and progress.ended
    split = next(stage for stage in progress.stages if stage.name == "split")
    assert split.processed == records
    assert 0 < split.frames_sent <= 2 * records // batch, split.frames_sent


def _feeder(starving: list[bool], batch: int = 10) -> tuple[Feeder, list[int]]:
    """A feeder for four workers of ``batch``; the sizes of the frames it queues for stage 0."""
    sent: list[int] = []
    pipeline = Pipeline("frames", [{"name": "split", "uses": Split}])

    def enter(stage: int, ids: list[int], records: list[bytes]) -> None:
        assert stage == 0 and len(ids) == 3 * len(records)
        sent.append(len(records))

    feeder = Feeder(
        pipeline,
        1,
        Tracker(),
        RunReport(pipeline.name),
        enter,
        lambda stage: 4,
        lambda stage: starving[0],
        b"k" * 32,
        batch_size=batch,
        max_in_flight=1000,
        credit=2,
        frame_bytes=1 << 20,
    )
    return feeder, sent


def _roots(feeder: Feeder, count: int) -> None:
    feeder.forming += [feeder.tracker.add(seq, b'{"id":"x","text":"a"}') for seq in range(count)]


def test_a_short_last_frame_waits_while_every_worker_is_busy() -> None:
    """Read input goes out in whole frames; the short rest waits until a worker runs dry."""
    starving = [False]
    feeder, sent = _feeder(starving)
    _roots(feeder, 25)
    feeder.release(whole=False)
    assert sent == [10, 10] and len(feeder.forming) == 5  # not spread into 4 frames of 6
    _roots(feeder, 5)
    feeder.release(whole=False)
    assert sent == [10, 10, 10] and not feeder.forming
    _roots(feeder, 3)
    feeder.release(whole=False)
    assert sent == [10, 10, 10] and len(feeder.forming) == 3
    starving[0] = True  # then it goes, spread over the workers as any small input is
    feeder.release(whole=False)
    assert sent == [10, 10, 10, 1, 1, 1] and not feeder.forming


def test_a_run_sends_a_small_first_frame_ahead() -> None:
    """The first frame holds a few records, so the first results need only their work."""
    feeder, sent = _feeder([False], batch=256)
    _roots(feeder, 300)
    feeder.release(whole=False)
    assert sent == [FIRST_FRAME, 256] and len(feeder.forming) == 300 - FIRST_FRAME - 256
    _roots(feeder, 300)
    feeder.release(whole=False)
    assert sent == [FIRST_FRAME, 256, 256]  # only the run's first frame is small


def test_the_end_of_input_sends_what_was_held_back() -> None:
    """When the input ends, its last records leave at once, whatever the workers hold."""
    feeder, sent = _feeder([False])
    source = ((seq, b'{"id":"x","text":"a"}') for seq in range(1, 24))
    exhausted, _ = feeder.feed(source)
    assert exhausted and sum(sent) == 23 and not feeder.forming


def test_a_window_smaller_than_a_frame_delivers_every_record() -> None:
    """With a window smaller than one frame, held-back records still all go out."""
    pipeline = Pipeline("frames", [{"name": "split", "uses": Split, "workers": 2}])
    items = [{"id": str(i), "text": "a b"} for i in range(3000)]
    run = pipeline.run(iter(items), batch_size=256, max_in_flight=100)
    assert sorted(words.id for words in run) == sorted(item["id"] for item in items)


def test_the_resume_point_moves_past_every_line_done_before_the_first_open_one() -> None:
    """complete_through is the last line of the longest fully done run from the start, however
    the lines complete (one at a time or a list at once, in order or not)."""
    feeder, _ = _feeder([False])
    feeder.feed(iter([(line, b'{"id":"x","text":"a"}') for line in range(1, 11)]))
    report = feeder.report
    feeder.done_all([3, 2])
    assert (report.complete_through, report.done_beyond) == (0, 2)
    feeder.done(1)
    assert (report.complete_through, report.done_beyond) == (3, 0)
    feeder.done_all([5, 7, 6])
    assert (report.complete_through, report.done_beyond) == (3, 3)
    feeder.done_all([4, 9])
    assert (report.complete_through, report.done_beyond) == (7, 1)
    feeder.done_all([8, 10])
    assert (report.complete_through, report.done_beyond) == (10, 0)
    feeder.done_all([])
    assert (report.complete_through, report.done_beyond) == (10, 0)
