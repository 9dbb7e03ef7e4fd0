"""Names and arguments are checked before anything is created."""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import json

import pytest

from lime_task.errors import InvalidArgumentsError, InvalidTaskError
from lime_task.resource import MAX_ARGUMENTS_BYTES, TASK_NAME_MAX
from lime_task.validation import check_app_name, check_arguments, check_task_name

# --- task names -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    "a.b",
    "my_package.tasks.lime.get_lime_company",
    "_private.mod._fn",
    "A1.B2.C3",
    "acme_solution.tasks.lime.add",
    "x." + "y" * (TASK_NAME_MAX - 2),  # exactly at the limit
])
def test_valid_task_names_are_returned_unchanged(name: str) -> None:
    assert check_task_name(name) == name


@pytest.mark.parametrize("name", [
    "nodot",
    "a.*",
    "a.#",
    "core.#.b",
    "a.b c",
    " a.b",
    "a.b ",
    "a..b",
    ".a.b",
    "a.b.",
    "1a.b",
    "a.1b",
    "a-b.c",
    "a.b-c",
    "a/b.c",
    "ä.b",
    "x." + "y" * (TASK_NAME_MAX - 1),  # one over the limit
])
def test_invalid_task_names_are_rejected(name: str) -> None:
    with pytest.raises(InvalidTaskError) as info:
        check_task_name(name)
    message = str(info.value)
    assert repr(name) in message
    assert "dotted" in message


@pytest.mark.parametrize("name", [None, 1, b"a.b", ["a.b"], ""])
def test_non_string_or_empty_task_names_are_rejected(name: object) -> None:
    with pytest.raises(InvalidTaskError, match="non-empty string"):
        check_task_name(name)


def test_invalid_task_name_error_is_a_value_error() -> None:
    # Callers catching the builtin type (as the design promises) catch ours too.
    with pytest.raises(ValueError):
        check_task_name("nodot")


def test_task_name_with_trailing_newline_is_rejected() -> None:
    with pytest.raises(InvalidTaskError):
        check_task_name("acme.tasks.add\n")


# --- application names ------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    "a", "7", "my-app", "my_app", "my.app", "App-1", "a" * 63, "a" + "-" * 61 + "z",
])
def test_valid_app_names(name: str) -> None:
    assert check_app_name(name) == name


@pytest.mark.parametrize("name", [
    "", "a" * 64, "-app", "app-", "_app", "app_", ".app", "app.", "my app", "app/x", "app:1",
    "äpp",
])
def test_invalid_app_names_are_rejected(name: str) -> None:
    with pytest.raises(InvalidTaskError) as info:
        check_app_name(name)
    assert repr(name) in str(info.value)
    assert "63" in str(info.value)


@pytest.mark.parametrize("name", [None, 5, b"app", ["app"]])
def test_non_string_app_names_are_rejected(name: object) -> None:
    with pytest.raises(InvalidTaskError):
        check_app_name(name)


def test_app_name_with_trailing_newline_is_rejected() -> None:
    with pytest.raises(InvalidTaskError):
        check_app_name("app\n")


# --- arguments --------------------------------------------------------------------------------

def test_json_arguments_are_accepted_and_copied() -> None:
    inner = {"k": [1, 2.5, None, True, "s"]}
    args, kwargs = check_arguments([1, "x", inner], {"props": ["name"], "deep": {"a": {"b": []}}})
    assert args == [1, "x", {"k": [1, 2.5, None, True, "s"]}]
    assert kwargs == {"props": ["name"], "deep": {"a": {"b": []}}}
    # Copies, not the caller's objects: the task sees what the cluster would see.
    assert args[2] is not inner
    assert isinstance(args, list) and isinstance(kwargs, dict)


def test_tuples_become_lists() -> None:
    args, kwargs = check_arguments((1, (2, 3)), {"t": (4, (5,))})
    assert args == [1, [2, 3]]
    assert type(args[1]) is list
    assert kwargs == {"t": [4, [5]]}
    assert type(kwargs["t"][1]) is list


def test_no_arguments() -> None:
    assert check_arguments((), {}) == ([], {})


class Thing:
    pass


@pytest.mark.parametrize("value, kind", [
    ({1, 2}, "set"),
    (frozenset({1}), "frozenset"),
    (Thing(), "Thing"),
    (b"bytes", "bytes"),
    (bytearray(b"x"), "bytearray"),
    (dt.date(2024, 1, 1), "date"),
    (decimal.Decimal("1.5"), "Decimal"),
    (1 + 2j, "complex"),
])
def test_non_json_positional_argument_is_rejected_naming_it(value: object, kind: str) -> None:
    with pytest.raises(InvalidArgumentsError) as info:
        check_arguments([1, value], {})
    message = str(info.value)
    assert "argument 2" in message
    assert kind in message
    assert "not JSON" in message


def test_non_json_keyword_argument_is_named() -> None:
    with pytest.raises(InvalidArgumentsError, match=r"keyword argument 'props'"):
        check_arguments([], {"ok": 1, "props": {"name"}})


def test_nested_bad_value_path_is_reported() -> None:
    with pytest.raises(InvalidArgumentsError) as info:
        check_arguments([{"a": [0, 1, b"x"]}], {})
    assert "argument 1['a'][2]" in str(info.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_floats_are_rejected(value: float) -> None:
    with pytest.raises(InvalidArgumentsError, match="argument 1.*JSON cannot represent"):
        check_arguments([value], {})
    with pytest.raises(InvalidArgumentsError, match="keyword argument 'x'"):
        check_arguments([], {"x": [value]})


@pytest.mark.parametrize("key", [1, None, ("a",), 1.5, True])
def test_non_string_dict_keys_are_rejected(key: object) -> None:
    with pytest.raises(InvalidArgumentsError) as info:
        check_arguments([], {"filters": {key: "v"}})
    assert "keyword argument 'filters'" in str(info.value)
    assert "not a string" in str(info.value)


def test_invalid_arguments_error_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        check_arguments([object()], {})


def test_other_mappings_with_string_keys_are_accepted() -> None:
    ordered = collections.OrderedDict([("b", 1), ("a", 2)])
    args, _ = check_arguments([ordered], {})
    assert args == [{"b": 1, "a": 2}]


def _payload_size(args: list[object], kwargs: dict[str, object]) -> int:
    return len(json.dumps([args, kwargs], separators=(",", ":")).encode())


def test_size_limit_boundary() -> None:
    overhead = _payload_size([""], {})
    at_limit = "x" * (MAX_ARGUMENTS_BYTES - overhead)
    assert _payload_size([at_limit], {}) == MAX_ARGUMENTS_BYTES
    args, _ = check_arguments([at_limit], {})
    assert args == [at_limit]
    with pytest.raises(InvalidArgumentsError) as info:
        check_arguments([at_limit + "x"], {})
    assert str(MAX_ARGUMENTS_BYTES) in str(info.value)
    assert str(MAX_ARGUMENTS_BYTES + 1) in str(info.value)


def test_size_limit_counts_keyword_arguments() -> None:
    with pytest.raises(InvalidArgumentsError, match="over the limit"):
        check_arguments([], {"blob": "y" * MAX_ARGUMENTS_BYTES})


def test_non_dict_mappings_are_converted_or_rejected_clearly() -> None:
    import types

    proxy = types.MappingProxyType({"a": 1})
    try:
        args, _ = check_arguments([proxy], {})
    except InvalidArgumentsError as exc:
        assert "argument 1" in str(exc)
    else:
        assert args == [{"a": 1}]


@pytest.mark.parametrize("name", ["amq.direct", "amq.topic", "", "x" * 256])
def test_exchange_names_rabbitmq_refuses_are_clear_errors(name: str) -> None:
    from lime_task.events import check_exchange_name

    with pytest.raises(InvalidTaskError):
        check_exchange_name(name)
    assert check_exchange_name("lime.my-app") == "lime.my-app"


@pytest.mark.parametrize("args, kwargs, words", [
    (["lone\ud800", "|"], {}, "argument 1 has a lone surrogate \\ud800 at character 5"),
    (["\udfff", "\ud83d"], {}, "argument 1 has a lone surrogate \\udfff at character 1"),
    ([["ok", {"deep": ["x\udc80"]}]], {}, "argument 1[1]['deep'][0] has a lone surrogate \\udc80"),
    ([], {"props": ["a\ud800"]}, "keyword argument 'props'[0] has a lone surrogate"),
    ([], {"\ud800": 1}, "a keyword argument's name has a lone surrogate"),
    ([{"k\ud800": 1}], {}, "argument 1 has a key"),
    ([b"\xff".decode("utf-8", "surrogateescape")], {}, "argument 1 has a lone surrogate \\udcff"),
])
def test_lone_surrogates_are_refused_not_changed(args: list[object], kwargs: dict[str, object], words: str) -> None:
    """The API server would store U+FFFD in their place: the task would not get what was sent."""
    with pytest.raises(InvalidArgumentsError) as err:
        check_arguments(args, kwargs)
    assert words in str(err.value) and "U+FFFD" in str(err.value)


def test_text_with_whole_surrogate_pairs_and_any_character_passes() -> None:
    text = "é ☃ 😀 \U0010ffff \x00 \u2028"
    assert check_arguments([text], {"k": {text: [text]}}) == ([text], {"k": {text: [text]}})
