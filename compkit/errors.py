"""compkit's own errors: each carries a one-line message meant for the user."""


class CompkitError(Exception):
    """An error with a one-line message meant for the user."""


class ConfigError(CompkitError):
    """A competition config (or a command-line option) is invalid."""


class DataError(CompkitError):
    """An input file (CSV, archive, submission) is missing or malformed."""


class DamagedArtifact(DataError):
    """A file a stage wrote no longer reads back (truncated, corrupted); `path` names it."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = path
        super().__init__(f"{path}: {reason}")


class BackendUnavailable(CompkitError):
    """An optional dependency or device needed by the chosen backend is missing."""


class KaggleError(CompkitError):
    """The Kaggle API refused or failed a request."""


class StaleArtifactError(CompkitError):
    """An artifact a stage needs is missing or older than its inputs."""


class ParameterError(ConfigError):
    """A library function's argument is invalid; the message names the parameter (`trials=0`).

    The CLI shows it as the flag that set the parameter (`--trials 0`), by the parameter's name.
    """

    def __init__(self, parameter: str, value: object, requirement: str) -> None:
        self.parameter, self.value, self.requirement = parameter, value, requirement
        super().__init__(f"{parameter}={value!r}: {requirement}")
