"""The verdict: what a finished attempt says, written to the termination message.

`{"state": "SUCCESS", "result": ...}` or `{"state": "FAILURE", "error": {"type", "message",
"reason"}}`, as compact JSON of at most `MAX_VERDICT_BYTES` bytes. A result that is not JSON
or does not fit is a FAILURE that says so, never a truncated SUCCESS.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .resource import FAILURE, MAX_VERDICT_BYTES, SUCCESS
from .safejson import lone_surrogate

# Reasons (CamelCase, as in Kubernetes conditions).
TASK_RAISED = "TaskRaised"
UNKNOWN_TASK = "UnknownTask"
INVALID_ARGUMENTS = "InvalidArguments"
RESULT_TOO_LARGE = "ResultTooLarge"
RESULT_NOT_JSON = "ResultNotJSON"
APP_FACTORY_FAILED = "ApplicationFailed"
MESSAGE_LIMIT = 1024


@dataclass(frozen=True)
class Verdict:
    state: str
    result: Any = None
    error: dict[str, str] = field(default_factory=dict)
    # A FAILURE the task's autoretry_for names: the retry policy, for the operator to apply.
    retry: dict[str, Any] | None = None

    def to_json(self) -> str:
        body: dict[str, Any] = {"state": self.state}
        if self.state == SUCCESS:
            body["result"] = self.result
        else:
            body["error"] = self.error
            if self.retry is not None:
                body["retry"] = self.retry
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def retry_policy(value: Any) -> dict[str, Any] | None:
    """A verdict's retry policy, checked: bounded numbers only (a verdict is a pod's word)."""
    if not isinstance(value, dict):
        return None

    def number(key: str, low: float, high: float, default: float) -> float:
        v = value.get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and low <= v <= high else default

    return {"maxRetries": int(number("maxRetries", 0, 50, 3)), "backoff": number("backoff", 0, 86400, 0),
            "backoffMax": number("backoffMax", 0, 7 * 86400, 600), "delay": number("delay", 0, 7 * 86400, 180),
            "jitter": value.get("jitter") is not False}


def failure(reason: str, type_: str, message: str, retry: dict[str, Any] | None = None) -> Verdict:
    """A FAILURE verdict whose JSON, retry policy included, always fits in the termination message.

    Long messages are cut (an error message is for people; a result is never cut). The cut
    is measured in encoded bytes, since escapes and UTF-8 can make one character several.
    """
    type_, message = _legible(type_[:200]), _legible(message)
    if len(message) > MESSAGE_LIMIT:
        message = message[: MESSAGE_LIMIT - 15] + "... (truncated)"
    verdict = Verdict(FAILURE, error={"type": type_, "message": message, "reason": reason}, retry=retry)
    while len(verdict.to_json().encode()) > MAX_VERDICT_BYTES:
        message = message[: len(message) // 2] + "... (truncated)"
        verdict = Verdict(FAILURE, error={"type": type_, "message": message, "reason": reason}, retry=retry)
    return verdict


def from_exception(exc: BaseException, reason: str = TASK_RAISED, retry: dict[str, Any] | None = None) -> Verdict:
    return failure(reason, type(exc).__name__, str(exc) or repr(exc), retry)


def success(result: Any) -> Verdict:
    """A SUCCESS verdict, or a FAILURE when the result is not JSON or does not fit."""
    try:
        text = json.dumps({"state": SUCCESS, "result": result}, separators=(",", ":"),
                          ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return failure(RESULT_NOT_JSON, "TypeError",
                       f"the task returned a {type(result).__name__}, which is not JSON ({exc}): "
                       f"return a short JSON summary such as a string or a small dict")
    try:
        size = len(text.encode())
    except UnicodeEncodeError:
        found = lone_surrogate(result, "the result") or "the result has a lone surrogate"
        return failure(RESULT_NOT_JSON, "UnicodeEncodeError",
                       f"{found}, which is no Unicode character: UTF-8, and so the termination message, cannot "
                       f"carry it. Return valid text (bytes as base64)")
    if size > MAX_VERDICT_BYTES:
        return failure(RESULT_TOO_LARGE, "ResultTooLarge",
                       f"the result takes {size} bytes as JSON; at most {MAX_VERDICT_BYTES - 30} fit. "
                       f"Return a short summary (for example 'updated 50 deals') and keep the data "
                       f"where the task stored it")
    return Verdict(SUCCESS, result=json.loads(text)["result"])


def _legible(text: str) -> str:
    """Text for people, with any lone surrogate (which UTF-8 cannot carry) shown as its escape."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse(text: str | None) -> Verdict | None:
    """The verdict in a termination message, or None when there is none (worker lost)."""
    if not text:
        return None
    try:
        body = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    state = body.get("state")
    if state == SUCCESS and "result" in body:
        return Verdict(SUCCESS, result=body["result"])
    if state == FAILURE and isinstance(body.get("error"), dict):
        err = body["error"]
        return Verdict(FAILURE, error={
            "type": str(err.get("type") or "Error"),
            "message": str(err.get("message") or ""),
            "reason": str(err.get("reason") or TASK_RAISED),
        }, retry=retry_policy(body.get("retry")))
    return None
