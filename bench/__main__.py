from bench.cli import main

try:
    code = main()
except KeyboardInterrupt:  # one that slipped past cmd_run's handling (e.g. during cleanup): still 128 + SIGINT
    code = 130
raise SystemExit(code)
