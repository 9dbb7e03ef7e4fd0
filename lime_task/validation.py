"""Checks applied before anything is created: names, and arguments that must be JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import InvalidArgumentsError, InvalidTaskError
from .resource import (
    APP_NAME_RE,
    MAX_ARGUMENT_DEPTH,
    MAX_ARGUMENT_NUMBER,
    MAX_ARGUMENTS_BYTES,
    TASK_NAME_MAX,
    TASK_NAME_RE,
)
from .safejson import depth


def check_task_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidTaskError(f"task name must be a non-empty string, got {name!r}")
    if len(name) > TASK_NAME_MAX or not TASK_NAME_RE.fullmatch(name):
        raise InvalidTaskError(
            f"invalid task name {name!r}: expected a dotted Python name such as "
            f"'my_package.tasks.lime.get_lime_company' (letters, digits, '_' and '.', "
            f"at most {TASK_NAME_MAX} characters)"
        )
    return name


def check_app_name(name: object) -> str:
    if not isinstance(name, str) or not APP_NAME_RE.fullmatch(name):
        raise InvalidTaskError(
            f"invalid application name {name!r}: 1 to 63 characters, letters, digits, '-', '_' "
            f"or '.', starting and ending with a letter or digit"
        )
    return name


def _check_json_value(value: Any, path: str) -> None:
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        if not -MAX_ARGUMENT_NUMBER <= value < MAX_ARGUMENT_NUMBER:
            raise InvalidArgumentsError(f"{path} is {value}, beyond the 64-bit integers the Kubernetes API keeps "
                                        f"exactly: pass it as a string")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgumentsError(f"{path} is {value!r}, which JSON cannot represent")
        if abs(value) >= MAX_ARGUMENT_NUMBER:
            raise InvalidArgumentsError(f"{path} is {value!r}, beyond 2**63, which the Kubernetes API does not keep "
                                        f"exactly: pass it as a string")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidArgumentsError(f"{path} has a key {key!r} that is not a string")
            _check_json_value(item, f"{path}[{key!r}]")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json_value(item, f"{path}[{i}]")
        return
    raise InvalidArgumentsError(
        f"{path} is a {type(value).__name__}, which is not JSON: pass plain values "
        f"(str, int, float, bool, None, list, dict) and look objects up inside the task"
    )


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def check_arguments(args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Return JSON-clean copies of the arguments, or raise `InvalidArgumentsError`."""
    # First, and without recursion: deeper values would exhaust the interpreter's stack below.
    nesting = depth([list(args), dict(kwargs)], MAX_ARGUMENT_DEPTH + 1) - 1
    if nesting > MAX_ARGUMENT_DEPTH:
        raise InvalidArgumentsError(
            f"task arguments nest deeper than {MAX_ARGUMENT_DEPTH} levels: pass flatter data, "
            f"or identifiers that the task looks up"
        )
    for i, value in enumerate(args):
        _check_json_value(value, f"argument {i + 1}")
    for key, value in kwargs.items():
        _check_json_value(value, f"keyword argument {key!r}")
    text = json.dumps([list(args), dict(kwargs)], separators=(",", ":"), default=_plain)
    size = len(text.encode())
    if size > MAX_ARGUMENTS_BYTES:
        raise InvalidArgumentsError(
            f"task arguments take {size} bytes as JSON, over the limit of {MAX_ARGUMENTS_BYTES}: "
            f"pass identifiers and let the task load the data"
        )
    # A round trip turns tuples into lists (and other mappings into dicts), as the task sees them.
    decoded: list[Any] = json.loads(text)
    return decoded[0], decoded[1]
