"""``stageflow validate PIPELINE``: every static check, nothing started."""

from __future__ import annotations

import argparse
from typing import Any

from stageflow.pipeline import Pipeline


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check a pipeline file without running it",
        description="Resolve every stage, validate every config block and check that each "
        "stage's Output satisfies the next stage's Input. Exit status 2 on the first problem. "
        "Lists the stages that run fused in one worker process, and those that autoscale.",
    )
    parser.add_argument("pipeline", help="the pipeline YAML file")
    parser.set_defaults(func=validate)


def validate(args: argparse.Namespace) -> int:
    pipeline = Pipeline.from_file(args.pipeline)
    chain = " → ".join(stage.name for stage in pipeline.stages)
    print(f"{args.pipeline}: pipeline {pipeline.name!r} is valid ({chain})")
    for line in pipeline.plan().describe():
        print(f"  {line}")
    for stage in pipeline.stages:
        if stage.bounds is not None:
            bounds = f"{stage.bounds} workers, {stage.workers} at the start"
            print(f"  autoscaled: {stage.name} ({bounds})")
    return 0
