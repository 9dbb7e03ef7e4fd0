"""The application object every task receives as its first argument."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

from .errors import InvalidTaskError
from .validation import check_app_name

APP_FACTORY_ENV = "LIMETASK_APP_FACTORY"


class Application:
    """The default application object: just the name. Lime solutions plug in their own."""

    def __init__(self, name: str) -> None:
        self.name = check_app_name(name)

    @property
    def identifier(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Application({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Application) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


def app_name_of(app: Any) -> str:
    """The application name of an application object (`identifier` or `name`) or a plain name."""
    if isinstance(app, str):
        return check_app_name(app)
    for attr in ("identifier", "name"):
        value = getattr(app, attr, None)
        if isinstance(value, str):
            return check_app_name(value)
    raise InvalidTaskError(
        f"cannot tell the application of {app!r}: pass an application object with an "
        f"`identifier` or `name`, or the application name"
    )


def load_app_factory(spec: str | None = None) -> Callable[[str], Any]:
    """The factory that builds application objects: `module:callable` from the environment."""
    spec = spec if spec is not None else os.environ.get(APP_FACTORY_ENV)
    if not spec:
        return Application
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InvalidTaskError(f"{APP_FACTORY_ENV}={spec!r}: expected 'module:callable'")
    factory = getattr(importlib.import_module(module_name), attr, None)
    if not callable(factory):
        raise InvalidTaskError(f"{APP_FACTORY_ENV}={spec!r}: {attr!r} is not callable in {module_name!r}")
    return factory  # type: ignore[no-any-return]
