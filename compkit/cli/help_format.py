"""How `--help` labels each parameter's value: flags get none, repeatable values their element's type.

typer's rich help labels a flag `<bool>` (`--force <bool>` reads as if it took a value) and a repeatable value
`<list[Path]>` (a Python annotation, not what one types). Every compkit command is a `HelpCommand`: a flag is
shown bare and a repeatable value as its element, `<path>` (an option says "repeat" in its help; a variadic
argument keeps its `...`). A parameter given a `metavar` is shown as that metavar, as typer does.
"""

from __future__ import annotations

import re
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption

_LIST_LABEL = re.compile(r"^<list\[(?P<element>.+)\]>$")


def _label(param: Any, ctx: typer.Context) -> str | None:
    """Return the label the help shows for `param`'s value, or None where typer's own is right."""
    if param.metavar is not None:
        return None
    if isinstance(param, TyperOption) and param.is_flag:
        return ""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None and descriptor.is_list:
        match = _LIST_LABEL.match(param.display_type(ctx))
        if match:
            element = match["element"]
            return f"<{element.lower() if element == 'Path' else element}>"
    return None


def _relabel(params: list[Any], ctx: typer.Context) -> None:
    for param in params:
        label = _label(param, ctx)
        if label is not None:
            # typer's rich help asks each parameter for this label; an instance attribute answers first.
            param.display_type_rich = lambda ctx, label=label: label


class HelpCommand(TyperCommand):
    """A command whose help shows flags without a value label and repeatable values by their element."""

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        _relabel(self.get_params(ctx), ctx)
        super().format_help(ctx, formatter)


class HelpGroup(TyperGroup):
    """The `compkit` group, its own help labelled like its commands'."""

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        _relabel(self.get_params(ctx), ctx)
        super().format_help(ctx, formatter)


class HelpTyper(typer.Typer):
    """A Typer app whose commands are HelpCommands unless they name another class."""

    def command(self, *args, cls: type[TyperCommand] | None = None, **kwargs):
        return super().command(*args, cls=cls or HelpCommand, **kwargs)
