import sys

from bench.cli import main
from bench.interrupts import exit_now

try:
    code = main()
except KeyboardInterrupt:  # one that slipped past cmd_run's handling (e.g. during cleanup): still 128 + SIGINT
    code = 130
if code in (130, 143):
    exit_now(code)
sys.exit(code)
