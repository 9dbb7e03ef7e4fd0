"""The verdict: a compact JSON document of at most 4096 bytes, never a truncated SUCCESS."""

from __future__ import annotations

import json

import pytest

from lime_task import verdict as v
from lime_task.resource import FAILURE, MAX_VERDICT_BYTES, SUCCESS


def size(verdict: v.Verdict) -> int:
    return len(verdict.to_json().encode())


@pytest.mark.parametrize("result", [
    None, 0, -1, 2.5, True, False, "", "hello", "é ☃ 😀", [], {}, [1, "a", None],
    {"nested": {"list": [1, 2, {"x": None}]}},
])
def test_success_round_trip(result: object) -> None:
    made = v.success(result)
    assert made.state == SUCCESS
    assert made.result == result
    text = made.to_json()
    assert json.loads(text) == {"state": SUCCESS, "result": result}
    assert v.parse(text) == made


def test_success_json_is_compact_and_utf8() -> None:
    text = v.success({"a": [1, 2], "s": "ä"}).to_json()
    assert text == '{"state":"SUCCESS","result":{"a":[1,2],"s":"ä"}}'


def test_success_normalises_tuples_to_lists() -> None:
    made = v.success((1, (2, 3)))
    assert made.result == [1, [2, 3]]
    assert v.parse(made.to_json()) == made


def test_failure_round_trip() -> None:
    made = v.failure(v.TASK_RAISED, "ValueError", "the CRM said no")
    assert made.state == FAILURE
    assert made.error == {"type": "ValueError", "message": "the CRM said no", "reason": "TaskRaised"}
    text = made.to_json()
    assert json.loads(text) == {"state": FAILURE, "error": made.error}
    assert "result" not in json.loads(text)
    assert v.parse(text) == made


def test_from_exception_uses_type_and_message() -> None:
    made = v.from_exception(KeyError("deal 7"))
    assert made.error["type"] == "KeyError"
    assert made.error["message"] == "'deal 7'"
    assert made.error["reason"] == v.TASK_RAISED
    assert v.from_exception(ValueError("x"), v.UNKNOWN_TASK).error["reason"] == "UnknownTask"


def test_from_exception_without_message_uses_repr() -> None:
    made = v.from_exception(RuntimeError())
    assert made.error["message"] == "RuntimeError()"


class Custom:
    pass


@pytest.mark.parametrize("result, kind", [
    ({1, 2, 3}, "set"),
    (Custom(), "Custom"),
    (b"bytes", "bytes"),
    ({"ok": [object()]}, "dict"),
    ({1: "int key"}, None),
])
def test_non_json_result_is_failure(result: object, kind: str | None) -> None:
    made = v.success(result)
    if kind is None:
        # json.dumps turns int keys into strings: that is JSON, and the task sees the string key.
        assert made.state == SUCCESS and made.result == {"1": "int key"}
        return
    assert made.state == FAILURE
    assert made.error["reason"] == v.RESULT_NOT_JSON == "ResultNotJSON"
    assert kind in made.error["message"]
    assert "not JSON" in made.error["message"]
    assert made.result is None


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_result_is_failure(value: float) -> None:
    assert v.success(value).error["reason"] == v.RESULT_NOT_JSON
    assert v.success({"x": [value]}).error["reason"] == v.RESULT_NOT_JSON


def _string_of_total(total: int) -> str:
    overhead = len(json.dumps({"state": SUCCESS, "result": ""}, separators=(",", ":")).encode())
    return "x" * (total - overhead)


def test_result_exactly_at_the_limit_is_success() -> None:
    result = _string_of_total(MAX_VERDICT_BYTES)
    made = v.success(result)
    assert made.state == SUCCESS
    assert made.result == result
    assert size(made) == MAX_VERDICT_BYTES


def test_result_one_byte_over_the_limit_is_failure() -> None:
    made = v.success(_string_of_total(MAX_VERDICT_BYTES + 1))
    assert made.state == FAILURE
    assert made.error["reason"] == v.RESULT_TOO_LARGE == "ResultTooLarge"
    assert str(MAX_VERDICT_BYTES + 1) in made.error["message"]
    assert "summary" in made.error["message"]
    assert size(made) <= MAX_VERDICT_BYTES


def test_limit_counts_utf8_bytes_not_characters() -> None:
    overhead = len(json.dumps({"state": SUCCESS, "result": ""}, separators=(",", ":")).encode())
    fits = "é" * ((MAX_VERDICT_BYTES - overhead) // 2)          # 2 bytes each
    assert v.success(fits).state == SUCCESS
    too_big = "é" * ((MAX_VERDICT_BYTES - overhead) // 2 + 1)   # fewer characters than the limit
    assert len(too_big) < MAX_VERDICT_BYTES
    assert v.success(too_big).error["reason"] == v.RESULT_TOO_LARGE


def test_huge_result_is_never_a_truncated_success() -> None:
    made = v.success({"rows": list(range(100_000))})
    assert made.state == FAILURE
    assert made.result is None
    assert v.parse(made.to_json()).state == FAILURE  # type: ignore[union-attr]


def test_long_ascii_error_message_is_capped() -> None:
    made = v.from_exception(ValueError("e" * 100_000))
    message = made.error["message"]
    assert len(message) == v.MESSAGE_LIMIT
    assert message.endswith("... (truncated)")
    assert message.startswith("eeee")
    assert size(made) <= MAX_VERDICT_BYTES
    assert v.parse(made.to_json()) == made


def test_message_at_the_cap_is_kept_whole() -> None:
    text = "m" * v.MESSAGE_LIMIT
    assert v.failure(v.TASK_RAISED, "E", text).error["message"] == text


@pytest.mark.parametrize("text", ["😀" * 5000, "\x01" * 5000])
def test_any_failure_verdict_fits_the_termination_message(text: str) -> None:
    made = v.from_exception(ValueError(text))
    assert size(made) <= MAX_VERDICT_BYTES


@pytest.mark.parametrize("text", [
    None, "", "   ", "not json", "{", '{"state": "SUCCESS", "result": ',  # truncated
    "[]", '"SUCCESS"', "42", "null",
    '{"state": "SUCCESS"}',                       # no result
    '{"state": "DONE", "result": 1}',             # wrong state
    '{"state": "success", "result": 1}',          # wrong case
    '{"state": "PENDING"}',
    '{"state": "FAILURE"}',                       # no error
    '{"state": "FAILURE", "error": "boom"}',      # error not an object
    '{"result": 1}',
    '{"state": "SUCCESS", "result": NaN}',
    '{"state": "SUCCESS", "result": Infinity}',
    '{"state": "SUCCESS", "result": -Infinity}',
])
def test_parse_returns_none_without_a_verdict(text: str | None) -> None:
    assert v.parse(text) is None


def test_parse_of_a_truncated_verdict_tail_is_none() -> None:
    # The kubelet keeps the *last* 4096 bytes of an over-long message.
    text = v.success("x" * 4000).to_json() + " " * 200
    assert v.parse(text[-MAX_VERDICT_BYTES:][3:]) is None


def test_parse_rejects_nested_non_finite_numbers() -> None:
    assert v.parse('{"state":"SUCCESS","result":{"x":[NaN]}}') is None


def test_parse_failure_fills_missing_error_fields() -> None:
    found = v.parse('{"state": "FAILURE", "error": {}}')
    assert found is not None
    assert found.error == {"type": "Error", "message": "", "reason": v.TASK_RAISED}


def test_parse_failure_keeps_given_fields_as_strings() -> None:
    found = v.parse('{"state":"FAILURE","error":{"type":"OSError","message":5,"reason":"UnknownTask"}}')
    assert found == v.Verdict(FAILURE, error={"type": "OSError", "message": "5", "reason": "UnknownTask"})


def test_parse_success_with_null_result() -> None:
    assert v.parse('{"state":"SUCCESS","result":null}') == v.Verdict(SUCCESS, result=None)


def test_parse_tolerates_whitespace_and_extra_fields() -> None:
    found = v.parse('\n {"state": "SUCCESS", "result": [1], "extra": true}\n')
    assert found == v.Verdict(SUCCESS, result=[1])


def test_to_json_refuses_nan_instead_of_writing_invalid_json() -> None:
    with pytest.raises(ValueError):
        v.Verdict(SUCCESS, result=float("nan")).to_json()


def test_a_retryable_failure_fits_the_termination_message_with_its_retry_policy() -> None:
    """The policy goes into the size check: a message that only just fits alone must be cut."""
    text = ("\x01" * 580 + "e" * 444)[: v.MESSAGE_LIMIT]
    policy = v.retry_policy({"maxRetries": 50, "backoff": 86400, "backoffMax": 604800, "delay": 604800})
    alone = v.from_exception(ConnectionError(text))
    assert size(alone) > MAX_VERDICT_BYTES - len(json.dumps({"retry": policy}))  # the case in point
    made = v.from_exception(ConnectionError(text), retry=policy)
    assert size(made) <= MAX_VERDICT_BYTES
    back = v.parse(made.to_json())
    assert back is not None and back.retry == policy and back.error["type"] == "ConnectionError"
    assert back.error["message"].endswith("... (truncated)")


@pytest.mark.parametrize("result, where", [
    ("lone\ud800", "the result has a lone surrogate \\ud800 at character 5"),
    ({"rows": [1, "x\udfff"]}, "the result['rows'][1] has a lone surrogate \\udfff"),
    ({"k\ud83d": 1}, "the result has a key"),
])
def test_a_result_with_a_lone_surrogate_is_result_not_json_not_a_lost_worker(result: object, where: str) -> None:
    """UTF-8 cannot carry it: the verdict says so rather than the runner failing to write one."""
    made = v.success(result)
    assert made.state == FAILURE and made.error["reason"] == v.RESULT_NOT_JSON
    assert where in made.error["message"], made.error["message"]
    assert v.parse(made.to_json()) == made and size(made) <= MAX_VERDICT_BYTES


def test_an_error_message_with_a_lone_surrogate_shows_its_escape() -> None:
    """An error message is for people: a lone surrogate is shown as its escape, never as U+FFFD."""
    made = v.from_exception(ValueError("bad \ud800 input"))
    assert made.error["message"] == "bad \\ud800 input"
    assert v.parse(made.to_json().encode().decode()) == made
