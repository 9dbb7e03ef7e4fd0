"""safejson: JSON from other parties never raises RecursionError, and deep parts are clipped."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lime_task import safejson
from lime_task.errors import InvalidArgumentsError
from lime_task.validation import check_arguments


@pytest.mark.parametrize("text", ['[1,2,{"a":[true,null,"x\\u0024"]}]', "{}", "[]", '"s"', "3.5e2", "-0",
                                  '{"a":{"b":[]},"c":"\\"]"}', ' [ 1 , { "k" : [ ] } ] ', '"\\u00e9\\n"'])
def test_same_as_json_when_shallow(text: str) -> None:
    assert safejson.loads(text) == json.loads(text)
    assert safejson._loads_deep(text) == json.loads(text)


@pytest.mark.parametrize("text", ["[1,]", '{"a"}', "[1 2]", "{,}", "[", "1 2", '{"a":1,}', "]", "[}", '{"a":1:2}',
                                  "", "nul", '{1:2}', '["\x01"]'])
def test_invalid_json_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        safejson._loads_deep(text)


def test_deep_documents_parse_and_are_clipped() -> None:
    levels = 3000
    doc = safejson.loads('{"spec": {"args": ' + "[" * levels + "1" + "]" * levels + '}, "after": 2}')
    assert doc["after"] == 2  # what follows the deep part is read
    assert safejson.depth(doc) == safejson.CLIP_DEPTH
    inner: Any = doc
    while isinstance(inner, (dict, list)):
        inner = inner["spec"] if isinstance(inner, dict) and "spec" in inner else (
            inner["args"] if isinstance(inner, dict) else inner[0])
    assert inner == safejson.CLIPPED
    repr(doc), json.dumps(doc)  # everything downstream stays within the interpreter's limits


def test_a_listing_with_one_deep_item_keeps_the_others() -> None:
    items = [json.dumps({"metadata": {"name": f"t{i}"}, "spec": {"args": [i]}}) for i in range(50)]
    items.insert(25, '{"metadata": {"name": "deep"}, "spec": {"args": ' + "[" * 5000 + "]" * 5000 + "}}")
    listing = safejson.loads('{"items": [' + ",".join(items) + "]}")
    assert [i["metadata"]["name"] for i in listing["items"]][24:27] == ["t24", "deep", "t25"]
    assert listing["items"][0]["spec"]["args"] == [0]


def test_bytes_are_read_as_utf8() -> None:
    assert safejson.loads(("[" * 2000 + '"\u00e9"' + "]" * 2000).encode())  # deep and not ASCII


@pytest.mark.parametrize("value, expected", [(1, 0), ([], 1), ([[1]], 2), ({"a": [{}]}, 3), ("[[[", 0)])
def test_depth(value: Any, expected: int) -> None:
    assert safejson.depth(value) == expected


def test_depth_stops_at_the_limit() -> None:
    value: Any = 1
    for _ in range(100000):
        value = [value]
    assert safejson.depth(value, 64) == 65


def test_the_client_refuses_deep_arguments_without_recursing() -> None:
    value: Any = 1
    for _ in range(100000):
        value = {"k": value}
    with pytest.raises(InvalidArgumentsError, match="deeper than 64"):
        check_arguments([value], {})
    ok: Any = 1
    for _ in range(63):
        ok = [ok]
    assert check_arguments([ok], {})[0] == [ok]
