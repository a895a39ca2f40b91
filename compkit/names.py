"""Names that become path components (competition slugs, model names): what is allowed, checked in one place.

A name is letters, digits, '-', '_' and '.', starting with a letter or digit: no path separator, no '..',
no hidden file, so no name can write outside its workspace.
"""

from __future__ import annotations

import re

from compkit.errors import ConfigError

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
RULE = "letters, digits, '-', '_' and '.', starting with a letter or digit (no path separators)"


def name_problem(what: str, name: str) -> str | None:
    """Return why `name` cannot be used as a `what` (a one-line reason), or None when it can."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
        return f"{what} {name!r} must be {RULE}"
    return None


def path_component(what: str, name: str) -> str:
    """Return `name` when it is safe as one path component, else raise ConfigError saying why."""
    problem = name_problem(what, name)
    if problem:
        raise ConfigError(problem)
    return name
