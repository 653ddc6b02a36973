"""Report layer: from stored runs (MLflow stores, committed segments) to index.md, tables and figures.

Reads what the run layer wrote and may import its data types and bench.core's; nothing below it
imports the report (tests/test_imports.py). The builder is `bench.report.build.build_report`."""
