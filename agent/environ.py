"""Options from the environment: ``--dns-server`` is also
``SGW_REACH_DNS_SERVER``.

A variable's name is ``SGW_REACH_`` and the long option's name in upper
case, hyphens as underscores (``--type`` is ``SGW_REACH_TYPE``). A
variable becomes the option's default, so a flag on the command line wins
over it, and a required option whose variable is set is no longer
required. Its value goes through the option's own type function and
choices, as the flag's would; a bad one is a ``UsageError`` that names the
variable. An option that repeats takes a comma-separated list, and the
first such flag on the command line replaces the whole list rather than
adding to it. A switch takes 1/0, true/false, yes/no or on/off. An empty
variable counts as unset.

Limits: the variables are read when the parser is built, so a bad one
stops every command, not only the ones that use it. Options that count,
store constants other than booleans, take several values per flag, or
print help or the version have no variable.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agent.errors import UsageError

PREFIX = "SGW_REACH_"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_SINGLE = (None, "?")


def apply_environment(
    parser: argparse.ArgumentParser, environ: Mapping[str, str]
) -> None:
    """Make each set SGW_REACH_* variable the default of its option."""
    for action in parser._actions:
        name = variable_name(action)
        raw = "" if name is None else environ.get(name, "").strip()
        if name is None or not raw:
            continue
        action.default = _value(parser, action, name, raw)
        action.required = False
        if isinstance(action, argparse._AppendAction):
            _let_flags_replace(action)


def variable_name(action: argparse.Action) -> str | None:
    """The variable of an option, or None when it cannot have one."""
    if not _supported(action):
        return None
    for option in action.option_strings:
        if option.startswith("--"):
            return PREFIX + option[2:].upper().replace("-", "_")
    return None


def boolean(text: str) -> bool:
    """1/0, true/false, yes/no or on/off, in any case."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a yes or no (1/0, true/false, yes/no, on/off)"
    )


def _supported(action: argparse.Action) -> bool:
    if isinstance(action, argparse.BooleanOptionalAction):
        return True
    if isinstance(action, argparse._StoreConstAction):
        return isinstance(action.const, bool)
    if isinstance(action, argparse._ExtendAction):
        return False
    if isinstance(action, argparse._StoreAction | argparse._AppendAction):
        return action.nargs in _SINGLE
    return False


def _value(
    parser: argparse.ArgumentParser, action: argparse.Action, name: str, raw: str
) -> object:
    if isinstance(action, argparse._StoreConstAction):
        # store_true and store_false: the variable says whether the flag
        # counts as given.
        given = _convert(boolean, None, name, raw)
        return action.const if given else not action.const
    if isinstance(action, argparse.BooleanOptionalAction):
        return _convert(boolean, None, name, raw)
    convert = _type_of(parser, action)
    if isinstance(action, argparse._AppendAction):
        items = [item.strip() for item in raw.split(",") if item.strip()]
        return [_convert(convert, action.choices, name, item) for item in items]
    return _convert(convert, action.choices, name, raw)


def _type_of(
    parser: argparse.ArgumentParser, action: argparse.Action
) -> Callable[[str], Any]:
    # argparse looks a type given by name up in the parser's registry.
    found = parser._registry_get("type", action.type, action.type)
    if found is None:
        return str
    if not callable(found):
        raise TypeError(f"{action.dest}: type {found!r} is not callable")
    converter: Callable[[str], Any] = found
    return converter


def _convert(
    convert: Callable[[str], Any],
    choices: Any,
    name: str,
    text: str,
) -> Any:
    """The value of one item, checked as argparse checks a flag's."""
    try:
        value = convert(text)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"{name}: {exc}") from None
    except (TypeError, ValueError):
        what = getattr(convert, "__name__", repr(convert))
        raise UsageError(f"{name}: invalid {what} value: {text!r}") from None
    if choices is not None and value not in choices:
        allowed = ", ".join(repr(choice) for choice in choices)
        message = f"invalid choice: {text!r} (choose from {allowed})"
        raise UsageError(f"{name}: {message}")
    return value


class _FlagsReplace(argparse.Action):
    """Mixed in before an append action: the first flag on the command line
    starts a new list instead of adding to the variable's."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        if getattr(namespace, self.dest, None) is self.default:
            setattr(namespace, self.dest, None)
        super().__call__(parser, namespace, values, option_string)


def _let_flags_replace(action: argparse._AppendAction) -> None:
    # argparse copies the default and appends to the copy; no hook changes
    # that, so the action becomes an instance of a subclass that resets
    # the list first. Its state and behaviour are otherwise untouched.
    base = type(action)
    if issubclass(base, _FlagsReplace):
        return
    action.__class__ = type(f"Replacing{base.__name__}", (_FlagsReplace, base), {})
