"""compkit's own errors: each carries a one-line message meant for the user."""


class CompkitError(Exception):
    """An error with a one-line message meant for the user."""


class ConfigError(CompkitError):
    """A competition config (or a command-line option) is invalid."""


class DataError(CompkitError):
    """An input file (CSV, archive, submission) is missing or malformed."""


class BackendUnavailable(CompkitError):
    """An optional dependency or device needed by the chosen backend is missing."""


class KaggleError(CompkitError):
    """The Kaggle API refused or failed a request."""


class StaleArtifactError(CompkitError):
    """An artifact a stage needs is missing or older than its inputs."""
