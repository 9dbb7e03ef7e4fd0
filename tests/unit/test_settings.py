"""OperatorSettings.from_env: typed settings from LIMETASK_* variables, clear errors otherwise."""

from __future__ import annotations

import pytest
from limetask_operator.settings import OperatorSettings, SettingsError


def test_defaults_from_an_empty_environment() -> None:
    s = OperatorSettings.from_env({})
    assert s == OperatorSettings()
    assert s.runner_command == ["python", "-m", "limetask_runner"]
    assert s.allow_image_override is False  # a platform team opts in
    assert s.max_attempts_ceiling == 10
    assert s.runner_service_account is None


def test_unrelated_variables_are_ignored() -> None:
    assert OperatorSettings.from_env({"PATH": "/bin", "LIMETASK_UNKNOWN": "x"}) == OperatorSettings()


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIMETASK_RUNNER_IMAGE", "from-os-environ:1")
    assert OperatorSettings.from_env().runner_image == "from-os-environ:1"


def test_json_and_scalar_fields_are_parsed() -> None:
    s = OperatorSettings.from_env({
        "LIMETASK_RUNNER_IMAGE": "registry.example/runner:2",
        "LIMETASK_RUNNER_COMMAND": '["python3", "-m", "limetask_runner"]',
        "LIMETASK_RUNNER_ENV": '{"LIMETASK_APP_FACTORY": "acme.app:make"}',
        "LIMETASK_RUNNER_RESOURCES": '{"limits": {"memory": "1Gi"}}',
        "LIMETASK_RUNNER_NODE_SELECTOR": '{"pool": "tasks"}',
        "LIMETASK_RUNNER_TOLERATIONS": '[{"key": "tasks", "operator": "Exists", "effect": "NoSchedule"}]',
        "LIMETASK_RUNNER_IMAGE_PULL_SECRETS": '["regcred"]',
        "LIMETASK_RUNNER_SERVICE_ACCOUNT": "runner",
        "LIMETASK_RUNNER_USER_ID": "2000",
        "LIMETASK_ALLOW_IMAGE_OVERRIDE": "false",
        "LIMETASK_MAX_ATTEMPTS_CEILING": "5",
        "LIMETASK_JOB_TTL_SECONDS": "600",
        "LIMETASK_DELETE_FINISHED_JOBS": "0",
        "LIMETASK_WORKERS": "8",
    })
    assert s.runner_image == "registry.example/runner:2"
    assert s.runner_command == ["python3", "-m", "limetask_runner"]
    assert s.runner_env == {"LIMETASK_APP_FACTORY": "acme.app:make"}
    assert s.runner_resources == {"limits": {"memory": "1Gi"}}
    assert s.runner_node_selector == {"pool": "tasks"}
    assert s.runner_tolerations == [{"key": "tasks", "operator": "Exists", "effect": "NoSchedule"}]
    assert s.runner_image_pull_secrets == ["regcred"]
    assert s.runner_service_account == "runner"
    assert s.runner_user_id == 2000
    assert s.allow_image_override is False
    assert s.max_attempts_ceiling == 5
    assert s.job_ttl_seconds == 600
    assert s.delete_finished_jobs is False
    assert s.workers == 8


@pytest.mark.parametrize("value, expected", [("true", True), ("True", True), ("1", True), ("yes", True),
                                             ("false", False), ("0", False), ("no", False)])
def test_booleans(value: str, expected: bool) -> None:
    assert OperatorSettings.from_env({"LIMETASK_ALLOW_IMAGE_OVERRIDE": value}).allow_image_override is expected


@pytest.mark.parametrize("key, raw", [
    ("LIMETASK_RUNNER_COMMAND", "python -m limetask_runner"),
    ("LIMETASK_RUNNER_ENV", "{not json"),
    ("LIMETASK_RUNNER_RESOURCES", "limits: {memory: 1Gi}"),   # YAML is not JSON
    ("LIMETASK_RUNNER_TOLERATIONS", ""),
    ("LIMETASK_RUNNER_NODE_SELECTOR", "{'pool': 'tasks'}"),
])
def test_bad_json_names_the_variable(key: str, raw: str) -> None:
    with pytest.raises(SettingsError) as info:
        OperatorSettings.from_env({key: raw})
    assert key in str(info.value)
    assert "JSON" in str(info.value)


@pytest.mark.parametrize("key, raw", [
    ("LIMETASK_RUNNER_COMMAND", '{"a": 1}'),             # JSON, but not a list
    ("LIMETASK_RUNNER_COMMAND", '"python"'),
    ("LIMETASK_RUNNER_ENV", '{"A": 1}'),                 # values must be strings
    ("LIMETASK_RUNNER_ENV", '["A"]'),
    ("LIMETASK_RUNNER_NODE_SELECTOR", "null"),
    ("LIMETASK_RUNNER_IMAGE_PULL_SECRETS", '"regcred"'),
    ("LIMETASK_RUNNER_USER_ID", "abc"),
    ("LIMETASK_RUNNER_USER_ID", "1.5"),
    ("LIMETASK_ALLOW_IMAGE_OVERRIDE", "maybe"),
    ("LIMETASK_MAX_ATTEMPTS_CEILING", "0"),
    ("LIMETASK_MAX_ATTEMPTS_CEILING", "11"),
    ("LIMETASK_MAX_ATTEMPTS_CEILING", "ten"),
    ("LIMETASK_JOB_TTL_SECONDS", "soon"),
    ("LIMETASK_WORKERS", "many"),
    # Resource caps and defaults that are not quantities: refused at start-up, not per task.
    ("LIMETASK_MAX_RUNNER_RESOURCES", '{"memory": "lots"}'),
    ("LIMETASK_MAX_RUNNER_RESOURCES", '{"cpu": "inf"}'),
    ("LIMETASK_MAX_RUNNER_RESOURCES", '{"memory": "-1Gi"}'),
    ("LIMETASK_MAX_RUNNER_RESOURCES", '{"memory": true}'),
    ("LIMETASK_RUNNER_RESOURCES", '{"limits": {"memory": "lots"}}'),
    ("LIMETASK_RUNNER_RESOURCES", '{"requests": {"memory": "1Gi"}, "limits": {"memory": "1Mi"}}'),
    ("LIMETASK_RUNNER_RESOURCES", '{"claims": []}'),
    ("LIMETASK_DENY_UNLISTED_RESOURCES", "perhaps"),
    ("LIMETASK_MAX_MEMORY_ON_OOM", "lots"),
    ("LIMETASK_MAX_MEMORY_ON_OOM", "-1Gi"),
    ("LIMETASK_MAX_MEMORY_ON_OOM", "0"),
])
def test_bad_values_name_the_variable(key: str, raw: str) -> None:
    with pytest.raises(SettingsError) as info:
        OperatorSettings.from_env({key: raw})
    assert key in str(info.value)


def test_the_cap_of_memory_on_oom_is_a_quantity_or_empty() -> None:
    assert OperatorSettings.from_env({}).max_memory_on_oom == ""
    assert OperatorSettings.from_env({"LIMETASK_MAX_MEMORY_ON_OOM": " 8Gi "}).max_memory_on_oom == "8Gi"
    with pytest.raises(SettingsError, match="LIMETASK_MAX_MEMORY_ON_OOM: the cap of memoryOnOOM: 'lots' is not a "
                                            "quantity"):
        OperatorSettings.from_env({"LIMETASK_MAX_MEMORY_ON_OOM": "lots"})


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as info:
        OperatorSettings.from_env({"LIMETASK_RUNNER_USER_ID": "x", "LIMETASK_WORKERS": "y"})
    assert "LIMETASK_RUNNER_USER_ID" in str(info.value)
    assert "LIMETASK_WORKERS" in str(info.value)


def test_settings_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        OperatorSettings.from_env({"LIMETASK_WORKERS": "x"})


@pytest.mark.parametrize("raw", ["0", "-1"])
def test_workers_must_be_positive(raw: str) -> None:
    with pytest.raises(SettingsError, match="LIMETASK_WORKERS"):
        OperatorSettings.from_env({"LIMETASK_WORKERS": raw})


def test_job_ttl_must_not_be_negative() -> None:
    with pytest.raises(SettingsError, match="LIMETASK_JOB_TTL_SECONDS"):
        OperatorSettings.from_env({"LIMETASK_JOB_TTL_SECONDS": "-1"})


def test_installation_defaults_as_lime_tasks_config_has_them() -> None:
    default = OperatorSettings.from_env({})
    assert default.enable_scheduled_tasks is True and default.default_time_zone == ""
    assert default.default_time_limit == 0 and default.default_soft_time_limit == 0
    s = OperatorSettings.from_env({"LIMETASK_ENABLE_SCHEDULED_TASKS": "false",
                                   "LIMETASK_DEFAULT_TIME_ZONE": "Europe/Stockholm",
                                   "LIMETASK_DEFAULT_TIME_LIMIT": "3600", "LIMETASK_DEFAULT_SOFT_TIME_LIMIT": "3000"})
    assert s.enable_scheduled_tasks is False and s.default_time_zone == "Europe/Stockholm"
    assert (s.default_time_limit, s.default_soft_time_limit) == (3600, 3000)
    assert (default.default_queue, default.open_queues) == ("default", [])
    queues = OperatorSettings.from_env({"LIMETASK_DEFAULT_QUEUE": "standard", "LIMETASK_OPEN_QUEUES": '["asap"]'})
    assert (queues.default_queue, queues.open_queues) == ("standard", ["asap"])


@pytest.mark.parametrize(("env", "words"), [
    ({"LIMETASK_DEFAULT_TIME_ZONE": "Mars/Olympus"}, ["LIMETASK_DEFAULT_TIME_ZONE", "unknown time zone 'Mars/"]),
    ({"LIMETASK_DEFAULT_TIME_LIMIT": "-5"}, ["LIMETASK_DEFAULT_TIME_LIMIT", "greater than or equal to 0"]),
    ({"LIMETASK_DEFAULT_SOFT_TIME_LIMIT": "soon"}, ["LIMETASK_DEFAULT_SOFT_TIME_LIMIT"]),
    ({"LIMETASK_ENABLE_SCHEDULED_TASKS": "perhaps"}, ["LIMETASK_ENABLE_SCHEDULED_TASKS"]),
    ({"LIMETASK_DEFAULT_QUEUE": "Not_A_Queue"}, ["LIMETASK_DEFAULT_QUEUE", "'Not_A_Queue' is not a queue name"]),
    ({"LIMETASK_OPEN_QUEUES": '["asap", "Bad Name"]'}, ["LIMETASK_OPEN_QUEUES", "'Bad Name'"]),
    ({"LIMETASK_DEFAULT_TIME_LIMIT": "60", "LIMETASK_DEFAULT_SOFT_TIME_LIMIT": "60"},
     ["LIMETASK_DEFAULT_SOFT_TIME_LIMIT (60) must be below LIMETASK_DEFAULT_TIME_LIMIT (60)"]),
])
def test_bad_installation_defaults_are_clear(env: dict[str, str], words: list[str]) -> None:
    with pytest.raises(SettingsError) as info:
        OperatorSettings.from_env(env)
    for word in words:
        assert word in str(info.value), str(info.value)
