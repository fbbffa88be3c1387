"""``python -m hitl_pipeline.benchmark ...``, the same as ``hitl-pipeline benchmark``."""

from hitl_pipeline.benchmark.cli import main

raise SystemExit(main())
