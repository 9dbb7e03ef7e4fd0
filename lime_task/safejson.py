"""JSON from other parties that never takes the reader down.

Python's `json.loads` recurses once per nesting level and raises `RecursionError` near 1,000
levels. The Kubernetes API accepts far deeper documents, so one LimeTask with arguments
nested 3,000 levels deep would make every reader of it (a watch, a listing of 500 tasks, the
CLI) fail. `loads` parses such a document anyway, without recursion, and replaces whatever
lies deeper than `CLIP_DEPTH` with a short marker string: everything downstream (repr, dumps,
validation) then stays within the interpreter's limits, and the object is refused for what
it is (see `depth`) instead of taking its neighbours down with it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

# Containers below this depth are replaced by CLIPPED when a document is too deep to parse
# normally. Well under the interpreter's recursion limit, and far above any sane argument.
CLIP_DEPTH = 200
CLIPPED = f"<nested deeper than {CLIP_DEPTH} levels: dropped>"

_TOKEN = re.compile(
    r'[ \t\n\r]*(?:(?P<s>"(?:[^"\\\x00-\x1f]|\\.)*")'
    r"|(?P<n>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)"
    r"|(?P<l>true|false|null)|(?P<p>[\[\]{},:]))",
    re.S,
)
_LITERALS = {"true": True, "false": False, "null": None}


def loads(text: str | bytes | bytearray) -> Any:
    """`json.loads`, except that depth never raises `RecursionError` (deep parts are clipped)."""
    try:
        return json.loads(text)
    except RecursionError:
        return _loads_deep(text.decode("utf-8") if isinstance(text, (bytes, bytearray)) else text)


def depth(value: Any, limit: int | None = None) -> int:
    """How deeply `value` nests (a scalar is 0, `[]` is 1), without recursion.

    With `limit`, counting stops once it is exceeded (the answer is then `limit + 1`).
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        level += 1
        if level > deepest:
            deepest = level
            if limit is not None and deepest > limit:
                return deepest
        stack.extend((child, level) for child in children)
    return deepest


def _loads_deep(text: str) -> Any:
    """An iterative JSON parser for documents too deep for `json.loads`."""
    kinds: list[str] = []  # "[" or "{" for every open level
    built: list[Any] = []  # the containers of the open levels that are kept (at most CLIP_DEPTH)
    keys: list[Any] = []  # the pending key of each kept level (None in a list)
    root: Any = None
    have_root = False
    # What may come next: "value", "value_or_close" (after "["), "key_or_close" (after "{"),
    # "key" (after "," in an object), "colon", or "after" (a value just ended).
    expect = "value"
    pos = 0

    def put(value: Any) -> None:
        nonlocal root, have_root
        level = len(kinds)
        if level == 0:
            root, have_root = value, True
        elif level <= CLIP_DEPTH:
            if kinds[-1] == "[":
                built[-1].append(value)
            else:
                built[-1][keys[-1]] = value

    def bad(what: str, at: int) -> ValueError:
        return ValueError(f"invalid JSON: {what} at character {at}")

    while True:
        m = _TOKEN.match(text, pos)
        if m is None:
            if text[pos:].strip(" \t\n\r"):
                raise bad("unexpected text", pos)
            break
        pos, at = m.end(), m.start()
        punct = m.group("p")
        if punct is None:
            if expect in ("key", "key_or_close"):
                if m.group("s") is None:
                    raise bad("expected a key", at)
                if len(kinds) <= CLIP_DEPTH:
                    keys[-1] = json.loads(m.group("s"))
                expect = "colon"
            elif expect in ("value", "value_or_close"):
                token = m.group("s") or m.group("n")
                put(json.loads(token) if token is not None else _LITERALS[m.group("l")])
                expect = "after"
            else:
                raise bad("unexpected value", at)
        elif punct in "[{":
            if expect not in ("value", "value_or_close"):
                raise bad(f"unexpected {punct!r}", at)
            if len(kinds) < CLIP_DEPTH:
                container: Any = [] if punct == "[" else {}
                put(container)
                built.append(container)
                keys.append(None)
            elif len(kinds) == CLIP_DEPTH:
                put(CLIPPED)
            kinds.append(punct)
            expect = "value_or_close" if punct == "[" else "key_or_close"
        elif punct in "]}":
            opener = "[" if punct == "]" else "{"
            if not kinds or kinds[-1] != opener or expect not in (
                    "after", "value_or_close" if punct == "]" else "key_or_close"):
                raise bad(f"unexpected {punct!r}", at)
            if len(kinds) <= CLIP_DEPTH:
                built.pop()
                keys.pop()
            kinds.pop()
            expect = "after"
        elif punct == ",":
            if expect != "after" or not kinds:
                raise bad("unexpected ','", at)
            expect = "key" if kinds[-1] == "{" else "value"
        else:  # ":"
            if expect != "colon":
                raise bad("unexpected ':'", at)
            expect = "value"
    if kinds or not have_root:
        raise ValueError("invalid JSON: the document ends early")
    return root


def lone_surrogate(value: Any, path: str) -> str | None:
    """Where `value` holds a lone UTF-16 surrogate (U+D800 to U+DFFF), in words, or None.

    Such a code point is no Unicode character: UTF-8 cannot carry it, and the Kubernetes API
    turns its JSON escape into U+FFFD. Python lets it into a str (`json.loads` of its escape,
    `errors="surrogateescape"`), so it is looked for and refused rather than changed. No recursion: a value
    may be as deep as its size allows.
    """
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            found = _surrogate_in(item)
            if found is not None:
                return f"{where} has a lone surrogate \\u{ord(item[found]):04x} at character {found + 1}"
        elif isinstance(item, Mapping):
            for key, sub in reversed(list(item.items())):
                if isinstance(key, str) and _surrogate_in(key) is not None:
                    return f"{where} has a key {key!r} with a lone surrogate"
                stack.append((sub, f"{where}[{key!r}]"))
        elif isinstance(item, (list, tuple)):
            stack.extend((sub, f"{where}[{i}]") for i, sub in reversed(list(enumerate(item))))
    return None


def _surrogate_in(text: str) -> int | None:
    """The index of the first lone surrogate in `text`, or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None
