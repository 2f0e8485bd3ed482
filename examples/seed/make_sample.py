"""Write sample.jsonl: 2,000 deterministic raw series for the seed pipeline.

Run from anywhere: ``python examples/seed/make_sample.py [PATH]`` (default: sample.jsonl next
to this script). The same seed always writes the same bytes, so the committed file can be
checked against a fresh run.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 20261128
COUNT = 2000
SOURCES = ("sensor-a", "sensor-b", "sensor-c", "manual")


def records(count: int = COUNT, seed: int = SEED) -> list[dict[str, object]]:
    rng = random.Random(seed)
    out: list[dict[str, object]] = []
    for n in range(count):
        length = rng.randint(0, 20)
        kind = rng.random()
        if kind < 0.05:
            values = [0.0] * length  # all zero: the max is not positive, values stay as they are
        elif kind < 0.15:
            values = [round(rng.uniform(-10.0, 0.0), 3) for _ in range(length)]  # all negative
        else:
            values = [round(rng.uniform(0.0, 100.0), 3) for _ in range(length)]
        out.append(
            {
                "id": f"rec-{n:05d}",
                "raw_values": values,
                "metadata": {"source": rng.choice(SOURCES), "batch": n // 100},
            }
        )
    return out


def main(path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for record in records():
            fh.write(json.dumps(record, sort_keys=True) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "path",
        nargs="?",
        type=Path,
        default=Path(__file__).with_name("sample.jsonl"),
        help="where to write the records (default: sample.jsonl next to this script)",
    )
    main(parser.parse_args().path)
