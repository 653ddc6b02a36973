import os
import sys

from bench.cli import main

try:
    code = main()
except KeyboardInterrupt:  # one that slipped past cmd_run's handling (e.g. during cleanup): still 128 + SIGINT
    code = 130
if code in (130, 143):
    # Interrupted, and every cell is already recorded: skip the interpreter's teardown, where the
    # SIGINT case was still seen to end as killed-by-signal (-2) after the "interrupted" line.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
raise SystemExit(code)
