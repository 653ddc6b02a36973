"""Run layer: from a grid config to finished cells in an MLflow store.

Config parsing, grid expansion, executors, the runner (`run_one`), shared base checkpoints, the
cost plan and tracking. Imports bench.api and bench.core, never bench.report (tests/test_imports.py)."""
