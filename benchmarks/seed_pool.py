"""The seed pipeline as a multiprocessing Pool program: the peer of (f) in startup.py.

    python benchmarks/seed_pool.py INPUT.jsonl [--processes N] > results.jsonl

The same stage classes (``stageflow_seed``) do the same work with the same validation as
``stageflow run examples/seed/pipeline.yaml``: every record is validated from JSON as each
stage's Input and serialised to JSON as its Output, on every hop, and the preprocessor and
analyzer run in the pool's worker processes while the collector runs once, in the parent, as
the single collector worker does. Results are written in input order.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from pathlib import Path

from stageflow_seed import stages

_PREPROCESS = stages.Preprocessor()
_ANALYZE = stages.Analyzer()


def two_stages(line: bytes) -> bytes:
    """Preprocess and analyse one record, validating it on the way into each stage."""
    pre = _PREPROCESS.process(stages.RawSeries.model_validate_json(line)).model_dump_json()
    analysed = _ANALYZE.process(stages.Preprocessed.model_validate_json(pre))
    return analysed.model_dump_json().encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path)
    parser.add_argument("--processes", type=int, default=4, help="the seed's 2 + 2 workers")
    args = parser.parse_args()
    collector = stages.Collector(stages.CollectorConfig(progress_every=500))
    collector.setup()
    lines = [line for line in args.input.read_bytes().splitlines() if line.strip()]
    out = sys.stdout.buffer
    with multiprocessing.Pool(args.processes) as pool:
        for result in pool.imap(two_stages, lines, chunksize=64):
            item = collector.process(stages.AnalysisResult.model_validate_json(result))
            out.write(item.model_dump_json().encode() + b"\n")
    collector.finish()
    out.flush()


if __name__ == "__main__":
    main()
