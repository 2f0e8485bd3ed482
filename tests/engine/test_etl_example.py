"""The ETL example (examples/etl/etl.py) as a user runs it: CSV in, SQLite out."""

from __future__ import annotations

import csv
import sqlite3
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

ETL = REPO / "examples" / "etl"


def run_etl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ETL / "etl.py"), *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def expected_rows() -> tuple[dict[str, dict[str, object]], list[int]]:
    """Good rows' numbers, computed independently of the seed plugin, and bad rows' lines."""
    good: dict[str, dict[str, object]] = {}
    bad: list[int] = []
    with (ETL / "readings.csv").open(newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):  # line 1 is the header
            cell = row["values"].strip()
            try:
                values = [float(v) for v in cell.split(";")] if cell else []
            except ValueError:
                bad.append(line)
                continue
            top = max(values, default=0.0)
            norm = [v / top for v in values] if top > 0 else values
            good[row["id"]] = {
                "mean": statistics.fmean(norm) if norm else 0.0,
                "variance": statistics.pvariance(norm) if norm else 0.0,
                "trend": "unknown"
                if len(norm) < 2
                else ("increasing" if norm[-1] > norm[0] else "decreasing"),
                "source": row["source"],
                "batch": int(row["batch"]),
            }
    return good, bad


def table(db: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(query).fetchall()


def test_bundled_csv_is_what_the_generator_writes(tmp_path: Path) -> None:
    """readings.csv is reproducible: make_readings.py writes the same bytes."""
    fresh = tmp_path / "readings.csv"
    command = [sys.executable, str(ETL / "make_readings.py"), str(fresh)]
    done = subprocess.run(command, check=False, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert fresh.read_bytes() == (ETL / "readings.csv").read_bytes()


def test_etl_loads_good_rows_and_dead_letters_bad_ones(tmp_path: Path) -> None:
    """Every good row lands once with the seed's numbers; each bad row is dead-lettered by line."""
    good, bad = expected_rows()
    assert len(good) == 197 and len(bad) == 3  # the sample is what this test assumes
    db = tmp_path / "out.sqlite"
    done = run_etl("--csv", str(ETL / "readings.csv"), "--db", str(db))
    assert done.returncode == 0, done.stderr
    summary = done.stdout.splitlines()
    assert len(summary) == 1 and summary[0].startswith(
        f"etl: 197 of 200 rows loaded into {db} (table results), 3 dead-lettered "
        "(table dead_letters) in "
    )

    rows = table(db, "SELECT id, mean, variance, trend, source, batch FROM results")
    assert len(rows) == len({r[0] for r in rows}) == len(good)
    for id_, mean, variance, trend, source, batch in rows:
        want = good[str(id_)]
        assert mean == pytest.approx(want["mean"], abs=1e-12), id_
        assert variance == pytest.approx(want["variance"], abs=1e-12), id_
        assert (trend, source, batch) == (want["trend"], want["source"], want["batch"]), id_

    dead = table(db, "SELECT line, stage, error, message FROM dead_letters ORDER BY line")
    assert [d[0] for d in dead] == bad == [39, 103, 168]
    assert all(d[1:3] == ("preprocess", "ValidationError") for d in dead)
    assert all("valid number" in str(d[3]) for d in dead)


def test_rerun_replaces_content_and_a_failed_run_changes_nothing(tmp_path: Path) -> None:
    """Running again (asyncio form) gives the same tables; too many bad rows roll back."""
    db = tmp_path / "out.sqlite"
    assert run_etl("--db", str(db)).returncode == 0
    first = table(db, "SELECT id, mean, variance, trend, source, batch FROM results ORDER BY id")
    again = run_etl("--db", str(db), "--asyncio")
    assert again.returncode == 0, again.stderr
    assert table(db, "SELECT * FROM results ORDER BY id") == first
    assert table(db, "SELECT line FROM dead_letters ORDER BY line") == [(39,), (103,), (168,)]

    failed = run_etl("--db", str(db), "--max-errors", "2")
    assert failed.returncode == 1
    assert "3 records were dead-lettered (allowed: 2)" in failed.stderr
    assert f"{db} is unchanged" in failed.stderr and "Traceback" not in failed.stderr
    assert table(db, "SELECT * FROM results ORDER BY id") == first
    assert table(db, "SELECT count(*) FROM dead_letters") == [(3,)]
