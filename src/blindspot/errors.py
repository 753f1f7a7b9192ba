"""The one exception type for bad user input; the CLI prints it as one line and exits 2."""


class BlindspotError(Exception):
    """Bad input from the user: a file, a line, a config field, a checkpoint.

    The message must name where the problem is (file:line, field) and what was expected.
    Internal invariants use `assert`, not this.
    """


class DataError(BlindspotError):
    """A data file or data source that cannot be read as promised."""


class ConfigError(BlindspotError):
    """A config value or command-line option that is invalid."""


class CheckpointError(BlindspotError):
    """A saved model directory that is missing, corrupt, or from another base model."""
