"""An ETL job with stageflow embedded: CSV rows in, the seed analysis, SQLite tables out.

    python examples/etl/etl.py --csv examples/etl/readings.csv --db out.sqlite

Extract
    Each CSV row (``id``, ``values`` as semicolon-separated numbers, ``source``, ``batch``)
    becomes a seed ``RawSeries`` record, numbered with its line in the file. The values are
    passed on as text: the first stage's Input model parses them, so a row whose values are
    not numbers is dead-lettered by the pipeline, with its line number and the reason, and
    the job goes on (up to ``--max-errors`` such rows).
Transform
    ``pipeline.yaml`` beside this file: the seed stages (preprocess → analyze → collect) in
    worker processes. The CSV is read lazily, as the engine's in-flight window allows.
Load
    One SQLite transaction replaces the content of two tables: ``results`` (id, mean,
    variance, trend, source, batch), filled with ``executemany`` in batches as results
    arrive, and ``dead_letters`` (line, stage, error, message, record). Running the job
    again replaces both tables' content. A run that fails (more dead letters than
    ``--max-errors``, a repeated id, Ctrl-C) rolls back: the database keeps what it had.

Exit status: 0 loaded, 1 too many bad rows or a repeated id (nothing changed), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stageflow import Pipeline, RecordsFailedError

HERE = Path(__file__).resolve().parent
COLUMNS = ("id", "values", "source", "batch")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS results (
        id TEXT PRIMARY KEY,
        mean REAL NOT NULL,
        variance REAL NOT NULL,
        trend TEXT NOT NULL,
        source TEXT,
        batch INTEGER
    )""",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        line INTEGER,
        stage TEXT NOT NULL,
        error TEXT NOT NULL,
        message TEXT NOT NULL,
        record TEXT
    )""",
)
INSERT_RESULT = (
    "INSERT INTO results (id, mean, variance, trend, source, batch) VALUES (?, ?, ?, ?, ?, ?)"
)
INSERT_DEAD = (
    "INSERT INTO dead_letters (line, stage, error, message, record) VALUES (?, ?, ?, ?, ?)"
)


class BadInput(Exception):
    """The CSV cannot be read as readings (missing file or columns)."""


@dataclass
class Summary:
    rows: int
    loaded: int
    dead_lettered: int
    kept_dead_letters: int
    seconds: float

    def line(self, db: Path) -> str:
        text = (
            f"etl: {self.loaded} of {self.rows} rows loaded into {db} (table results), "
            f"{self.dead_lettered} dead-lettered (table dead_letters) in {self.seconds:.2f}s"
        )
        if self.kept_dead_letters < self.dead_lettered:
            text += f"; only the first {self.kept_dead_letters} dead letters are kept"
        return text


def records(rows: csv.DictReader[str]) -> Iterator[tuple[int, bytes]]:
    """(CSV line number, RawSeries JSON) for every row; the values stay text for the stage."""
    for row in rows:
        cell = row.get("values")
        if cell is None:
            values: list[str] | None = None  # a short row: the stage reports the missing list
        elif cell.strip():
            values = [v.strip() for v in cell.split(";")]
        else:
            values = []
        batch = (row.get("batch") or "").strip()
        record = {
            "id": row.get("id"),
            "raw_values": values,
            "metadata": {
                "source": row.get("source"),
                "batch": int(batch) if batch.isdigit() else batch,
            },
        }
        yield rows.line_num, json.dumps(record).encode()


def load(
    pipeline: Pipeline,
    csv_path: Path,
    db_path: Path,
    *,
    max_errors: int = 10,
    batch_rows: int = 500,
) -> Summary:
    """Run ``pipeline`` over the CSV and replace the two tables' content in one transaction.

    Call it from one thread: the SQLite connection it opens is used only by the thread that
    iterates the run (sqlite3 connections are bound to the thread that made them).
    """
    started = time.monotonic()
    try:
        handle = csv_path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"cannot open {str(csv_path)!r}: {exc.strerror}") from exc
    # isolation_level=None: no implicit transactions; this function says BEGIN and COMMIT.
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        with handle:
            rows = csv.DictReader(handle)
            missing = [c for c in COLUMNS if c not in (rows.fieldnames or ())]
            if missing:
                raise BadInput(f"{str(csv_path)!r} has no column {', '.join(missing)}")
            db.execute("BEGIN IMMEDIATE")
            for statement in SCHEMA:
                db.execute(statement)
            db.execute("DELETE FROM results")
            db.execute("DELETE FROM dead_letters")
            batch: list[tuple[Any, ...]] = []
            with pipeline.run(
                records(rows), numbered=True, max_errors=max_errors, log_level=logging.WARNING
            ) as run:
                for result in run:  # raises RecordsFailedError at the end if too many failed
                    meta = result.original_metadata
                    batch.append(
                        (
                            result.id,
                            result.mean,
                            result.variance,
                            result.trend,
                            meta.get("source"),
                            meta.get("batch"),
                        )
                    )
                    if len(batch) >= batch_rows:
                        db.executemany(INSERT_RESULT, batch)
                        batch.clear()
                db.executemany(INSERT_RESULT, batch)
            report = run.report
            db.executemany(
                INSERT_DEAD,
                [
                    (
                        d.get("line"),
                        d["stage"],
                        d["error"],
                        d["message"],
                        json.dumps(d.get("record")),
                    )
                    for d in sorted(report.dead_letters, key=lambda d: d.get("line") or 0)
                ],
            )
            db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    finally:
        db.close()
    return Summary(
        rows=report.records_in,
        loaded=report.results,
        dead_lettered=report.dead_lettered,
        kept_dead_letters=len(report.dead_letters),
        seconds=time.monotonic() - started,
    )


async def load_async(pipeline: Pipeline, csv_path: Path, db_path: Path, **options: Any) -> Summary:
    """The same job from asyncio code, without blocking the event loop.

    The whole job runs in one worker thread: the engine's iteration blocks, and the SQLite
    connection must stay in the thread that iterates. The event loop goes on meanwhile.
    """
    return await asyncio.to_thread(load, pipeline, csv_path, db_path, **options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--csv",
        type=Path,
        default=HERE / "readings.csv",
        help="input CSV (readings.csv beside this script)",
    )
    parser.add_argument(
        "--db", type=Path, default=Path("etl.sqlite"), help="SQLite file to write (etl.sqlite)"
    )
    parser.add_argument(
        "--pipeline",
        type=Path,
        default=HERE / "pipeline.yaml",
        help="pipeline file (pipeline.yaml beside this script)",
    )
    parser.add_argument(
        "--max-errors",
        type=int,
        default=10,
        metavar="N",
        help="bad rows tolerated before the job fails (10)",
    )
    parser.add_argument(
        "--batch-rows", type=int, default=500, metavar="N", help="rows per executemany (500)"
    )
    parser.add_argument(
        "--asyncio",
        action="store_true",
        help="run the job through load_async(), as asyncio code would",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")

    pipeline = Pipeline.from_file(args.pipeline)
    options = {"max_errors": args.max_errors, "batch_rows": args.batch_rows}
    try:
        if args.asyncio:
            summary = asyncio.run(load_async(pipeline, args.csv, args.db, **options))
        else:
            summary = load(pipeline, args.csv, args.db, **options)
    except BadInput as exc:
        print(f"etl: {exc}", file=sys.stderr)
        return 2
    except RecordsFailedError as exc:
        print(f"etl: {exc}; {args.db} is unchanged", file=sys.stderr)
        for dead in sorted(exc.report.dead_letters, key=lambda d: d.get("line") or 0)[:20]:
            print(f"  line {dead.get('line')}: {dead['message']}", file=sys.stderr)
        return 1
    except sqlite3.IntegrityError as exc:
        print(
            f"etl: cannot load {args.csv} ({exc}: an id is repeated); {args.db} is unchanged",
            file=sys.stderr,
        )
        return 1
    print(summary.line(args.db))
    return 0


if __name__ == "__main__":
    sys.exit(main())
