"""User-facing errors. The CLI turns an `ExtradimError` into one line on stderr and exit code 2."""


class ExtradimError(Exception):
    """An error caused by the user's input (a bad path, config, checkpoint or argument)."""


class ConfigError(ExtradimError, ValueError):
    """A config file or override that does not match its typed dataclass."""


class CheckpointError(ExtradimError):
    """A missing, corrupt or mismatched checkpoint."""
