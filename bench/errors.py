"""Errors that carry a message a user can act on: what is wrong, and how to fix it."""


class BenchError(Exception):
    """Base class: anything the CLI reports as one clean line instead of a traceback."""


class ConfigError(BenchError):
    """A config field has a bad value; the message names the field and the allowed values."""


class DataUnavailable(BenchError):
    """A dataset file is missing and could not be fetched; grid cells end `skipped` with this reason."""


class DataCorrupt(BenchError):
    """A dataset file exists but is unreadable or has the wrong arrays/shapes/dtypes."""


class DivergenceError(BenchError):
    """Training produced a NaN/inf loss."""


class UnknownMethod(ConfigError):
    """No plugin is registered under the requested name."""


class MethodUnavailable(BenchError):
    """The method's entry point failed to load: its cells fail with this, the grid's others run."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every layer stops the same way; the CLI then exits 143, not 130."""
