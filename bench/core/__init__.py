"""Core layer: one run's mechanics, no grid and no store.

Datasets, models, training, surgery, merge, measure, receptive fields, the method contract and
registry, the score driver and the probe that prices work. Imports only the standard library,
the numeric libraries and bench's base modules (errors, utils, interrupts); never bench.api,
bench.run or bench.report (tests/test_imports.py)."""
