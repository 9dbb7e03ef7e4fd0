"""Bearer tokens per application: a JSON object, `app=token` lines, or a directory with one file
per application (a mounted Secret), re-read when it changes. The HTTP endpoint checks them, and
the client presents them to the endpoint's results API.

A file that cannot be read after a change (a stray line, a token given to two applications)
refuses every application token until it is fixed: the edit may have been a revocation, and
keeping the old tokens would let a revoked one in. The store says why in `problem`, and logs it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import InvalidTaskError
from .validation import check_app_name

LOG = logging.getLogger("limetask.web")
TOKENS_FILE_ENV = "LIMETASK_WEB_TOKENS_FILE"
TOKENS_ENV = "LIMETASK_WEB_TOKENS"


def parse_tokens(text: str, source: str = "tokens") -> dict[str, str]:
    """Application → token from a JSON object or `app=token` lines (`#` starts a comment)."""
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        try:
            data = json.loads(stripped)
        except ValueError as exc:
            raise ValueError(f"{source}: not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object of application → token")
        pairs: Iterable[tuple[Any, Any]] = data.items()
    else:
        found: list[tuple[Any, Any]] = []
        for number, line in enumerate(stripped.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            app, sep, token = line.partition("=")
            if not sep:
                raise ValueError(f"{source}, line {number}: expected app=token")
            found.append((app.strip(), token.strip()))
        pairs = found
    return _checked(pairs, source)


def _checked(pairs: Iterable[tuple[Any, Any]], source: str) -> dict[str, str]:
    tokens: dict[str, str] = {}
    owners: dict[str, str] = {}
    for app, token in pairs:
        try:
            check_app_name(app)
        except InvalidTaskError as exc:
            raise ValueError(f"{source}: {exc}") from None
        if not isinstance(token, str) or not token or any(c.isspace() for c in token):
            raise ValueError(f"{source}: the token of {app!r} must be a non-empty string without spaces")
        if app in tokens:
            raise ValueError(f"{source}: {app!r} appears twice")
        # One token opening two applications would open either with it: each needs its own.
        if token in owners:
            raise ValueError(f"{source}: {owners[token]!r} and {app!r} have the same token: give each "
                             f"application its own")
        tokens[app] = token
        owners[token] = app
    return tokens


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def read_tokens(path: str | os.PathLike[str]) -> dict[str, str]:
    """Tokens from a file, or from a directory with one file per application (a Secret volume)."""
    p = Path(path)
    if p.is_dir():
        # A Secret volume holds `..data` and timestamped directories next to the keys: skip dot names.
        return _checked(((f.name, f.read_text().strip()) for f in sorted(p.iterdir())
                         if not f.name.startswith(".") and f.is_file()), str(p))
    return parse_tokens(p.read_text(), str(p))


class TokenStore:
    """The bearer token of each application, re-read when its file changes (a rotated Secret)."""

    def __init__(self, tokens: Mapping[str, str] | None = None, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._tokens = _checked(dict(tokens or {}).items(), "tokens")
        self._stamp: int | None = None
        # Digests of tokens no longer configured: still known as application tokens (see `holds`).
        self._retired: set[str] = set()
        # Why the file is refused (None: its tokens are in force).
        self.problem: str | None = None
        self._lock = threading.Lock()
        if self.path is not None:
            self._reload(initial=True)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, file_var: str = TOKENS_FILE_ENV,
                 var: str = TOKENS_ENV) -> "TokenStore":
        """From LIMETASK_WEB_TOKENS_FILE, else LIMETASK_WEB_TOKENS (JSON), else no tokens at all
        (the client reads LIMETASK_RESULTS_TOKENS_FILE and LIMETASK_RESULTS_TOKENS the same way)."""
        env = os.environ if env is None else env
        if env.get(file_var):
            return cls(path=env[file_var])
        if env.get(var):
            return cls(parse_tokens(env[var], var))
        return cls()

    def get(self, app: str) -> str | None:
        """The token of `app`, if there is one (None while the file is refused)."""
        return self._in_force().get(app)

    def _in_force(self) -> dict[str, str]:
        """The tokens that open their application now: none while the file is refused."""
        with self._lock:
            if self.path is not None:
                self._reload()
            return {} if self.problem is not None else dict(self._tokens)

    def _reload(self, initial: bool = False) -> None:
        assert self.path is not None
        stamp: int | None = None
        try:
            stamp = self.path.stat().st_mtime_ns
            if stamp == self._stamp:
                return
            tokens = read_tokens(self.path)
        except (OSError, ValueError) as exc:
            if initial:
                raise ValueError(f"cannot read the tokens from {self.path}: {exc}") from exc
            problem = f"cannot read the tokens from {self.path}: {exc}"
            if problem != self.problem:
                LOG.error("%s; every application token is refused until the file is fixed (the change "
                          "may have been a revocation)", problem)
            # (Read again once the file changes; a missing file is looked for at each request.)
            self.problem, self._stamp = problem, stamp
            return
        if self.problem is not None:
            LOG.warning("the tokens from %s are read again: %d application(s)", self.path, len(tokens))
        kept = {_digest(t) for t in tokens.values()}
        self._retired = (self._retired | {_digest(t) for t in self._tokens.values()}) - kept
        self._tokens, self._stamp, self.problem = tokens, stamp, None

    def apps(self) -> list[str]:
        return sorted(self._in_force())

    def holds(self, presented: str) -> bool:
        """Whether `presented` is, or was, some application's token: such a token opens its own
        application only, and is never shown to anyone else (the API server, say). Also true
        while the file is refused, for the tokens it had."""
        with self._lock:
            if self.path is not None:
                self._reload()
            tokens = list(self._tokens.values())
            retired = _digest(presented) in self._retired
        found = False
        for token in tokens:
            found |= hmac.compare_digest(presented.encode(), token.encode())
        return found or retired

    def owner(self, presented: str) -> str | None:
        """The application (or, for platform tokens, the name) whose token `presented` is, or
        None; every token is compared, in constant time."""
        found = None
        for app, token in self._in_force().items():
            if hmac.compare_digest(presented.encode(), token.encode()):
                found = app
        return found

    def check(self, app: str, presented: str | None) -> bool:
        """Whether `presented` is the token of `app`, compared in constant time."""
        expected = self._in_force().get(app)
        # Compare even without a token for the app, so that timing does not tell which apps exist.
        ok = hmac.compare_digest((presented or "").encode(), (expected or "\0").encode())
        return ok and expected is not None and presented is not None


