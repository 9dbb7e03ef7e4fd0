"""The HTTP endpoint's former home, kept so that code written against earlier releases keeps
working: `from lime_task.web import create_app` (and `app_token_auth`, for a solution's own
routers). The endpoint is `lime_task.server`; new code imports from there."""

from .server.app import create_app
from .server.auth import app_token_auth
from .server.middleware import MAX_BODY_BYTES
from .tokens import TokenStore, parse_tokens, read_tokens

__all__ = ["MAX_BODY_BYTES", "TokenStore", "app_token_auth", "create_app", "parse_tokens", "read_tokens"]
