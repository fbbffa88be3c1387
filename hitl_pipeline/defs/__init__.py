"""Dagster wiring, one module per flywheel stage, numbered in the order data flows.

``s01_ingest`` → ``s02_inference`` → ``s03_monitoring`` → ``s04_selection`` →
``s05_labeling`` → ``s06_feedback`` → ``s07_dataset`` → ``s08_training`` →
``s09_deployment``; ``automation`` holds jobs, sensors and the schedule; ``resources``
binds every outside system in one place.
"""
