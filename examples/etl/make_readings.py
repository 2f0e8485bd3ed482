"""Write readings.csv: 200 deterministic sensor readings for the ETL example, 3 of them bad.

Run from anywhere: ``python examples/etl/make_readings.py [PATH]``. The same seed always
writes the same bytes, so the committed file can be checked against a fresh run.

Columns: ``id``, ``values`` (semicolon-separated floats), ``source``, ``batch``. Three rows
carry values that are not numbers; the pipeline dead-letters them and the ETL job goes on.
"""

from __future__ import annotations

import csv
import random
import sys
from pathlib import Path

SEED = 20261128
COUNT = 200
SOURCES = ("sensor-a", "sensor-b", "sensor-c", "manual")
#: Row index (0-based, header excluded) -> a ``values`` cell that is not a list of numbers.
BAD = {37: "12.5;abc;7.25", 101: "n/a", 166: "3.1;;4.2"}


def rows(count: int = COUNT, seed: int = SEED) -> list[dict[str, str]]:
    rng = random.Random(seed)
    out: list[dict[str, str]] = []
    for n in range(count):
        length = rng.randint(0, 12)
        kind = rng.random()
        if kind < 0.05:
            values = [0.0] * length  # all zero: the maximum is not positive, nothing is scaled
        elif kind < 0.15:
            values = [round(rng.uniform(-10.0, 0.0), 3) for _ in range(length)]  # all negative
        else:
            values = [round(rng.uniform(0.0, 100.0), 3) for _ in range(length)]
        cell = BAD.get(n, ";".join(repr(v) for v in values))
        out.append(
            {
                "id": f"r-{n:04d}",
                "values": cell,
                "source": rng.choice(SOURCES),
                "batch": str(n // 50),
            }
        )
    return out


def main(path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(
            fh, fieldnames=["id", "values", "source", "batch"], lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(rows())


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("readings.csv"))
