"""``python -m stageflow`` runs the command line interface."""

from stageflow.cli import main

raise SystemExit(main())
