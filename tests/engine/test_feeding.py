"""The feeder's frames: input stays in big frames once the in-flight window is full."""

from __future__ import annotations

from stageflow import Pipeline
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
