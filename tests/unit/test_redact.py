"""`redact()`: no secret of a broker or archive URL reaches a log line or a message."""

from __future__ import annotations

import pytest

from lime_task.events import redact

SECRET = "hunter2-Zq9"


@pytest.mark.parametrize("url", [
    f"postgresql://limetask:{SECRET}@db:5432/limetask",
    f"postgresql://limetask@db:5432/limetask?password={SECRET}&sslmode=require",
    f"postgresql://limetask@db/limetask?sslmode=require&password={SECRET}",
    f"postgresql://db/limetask?user=limetask&PASSWORD={SECRET}",
    f"postgresql://db/limetask?sslpassword={SECRET}",
    f"postgresql://db/limetask?passfile=/run/{SECRET}",
    f"postgresql://db/limetask?client_secret={SECRET}&x=1",
    f"postgresql://db/limetask?sslkey=/keys/{SECRET}.key",
    f"postgresql://db/limetask?pass%77ord={SECRET}",  # a percent-encoded key: libpq decodes it
    f"postgresql://db/limetask?password={SECRET}#frag",
    f"postgresql://limetask:{SECRET}@db/limetask?password={SECRET}",
    f"postgresql://:{SECRET}@db/limetask",
    f"amqp://guest:{SECRET}@broker:5672/",
    f"amqps://guest@broker/?auth_token={SECRET}",
    f"postgresql://limetask:{SECRET}@[::1]:5432/limetask",
])
def test_no_secret_survives(url: str) -> None:
    out = redact(url)
    assert SECRET not in out, out
    assert "***" in out


def test_what_is_no_secret_stays_readable() -> None:
    assert redact("postgresql://limetask@db:5432/limetask?sslmode=require&password=x") == \
        "postgresql://limetask@db:5432/limetask?sslmode=require&password=***"
    assert redact("postgresql://limetask:pw@db:5432/limetask") == "postgresql://limetask:***@db:5432/limetask"
    assert redact("postgresql://db/limetask?application_name=web&connect_timeout=5") == \
        "postgresql://db/limetask?application_name=web&connect_timeout=5"
    assert redact("amqp://guest@broker:5672/") == "amqp://guest@broker:5672/"


def test_text_that_is_no_url_loses_its_secrets_too() -> None:
    """Key/value connection strings and error messages that quote one."""
    out = redact(f"host=db port=5432 user=limetask password={SECRET} sslmode=require")
    assert SECRET not in out and "host=db" in out and "sslmode=require" in out
    assert SECRET not in redact(f"invalid dsn: password='{SECRET} with space' host=db")
    assert redact("connection refused") == "connection refused"


def test_an_unparseable_url_is_not_echoed() -> None:
    assert SECRET not in redact(f"postgresql://limetask:{SECRET}@[db/limetask")
