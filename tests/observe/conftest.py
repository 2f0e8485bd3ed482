"""Observation tests run real pipelines: no worker may outlive a test here either."""

from tests.engine.conftest import no_process_left_behind

__all__ = ["no_process_left_behind"]
