"""`@task(memory_on_oom=[...])` and `send_task(..., memory_on_oom=)` on the client's side: the
sizes are checked before anything is created, and go in spec.memoryOnOOM. (The operator's
side: tests/unit/derivation/test_oom.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import lime_task.client
from lime_task import InvalidTaskError, TaskClient, TaskOptions, send_task, task
from lime_task.validation import check_memory_on_oom
from tests.unit.fake_api import FakeCustomObjects, fake_client

ADD = "acme_solution.tasks.lime.add"


@task(name="tests.memory_on_oom.crunch", memory_on_oom=["1Gi", "2Gi"])
def crunch(app: Any, n: int) -> int:
    return n


@pytest.fixture
def api() -> FakeCustomObjects:
    return FakeCustomObjects()


@pytest.fixture
def client(tmp_path: Path, api: FakeCustomObjects) -> TaskClient:
    return fake_client(tmp_path, api)


def test_the_tasks_sizes_are_kept_as_strings() -> None:
    assert crunch.options.memory_on_oom == ("1Gi", "2Gi")
    assert TaskOptions(memory_on_oom=["512Mi", 2**31]).memory_on_oom == ("512Mi", "2147483648")  # type: ignore[arg-type]
    assert TaskOptions().memory_on_oom == () and TaskOptions(memory_on_oom=[]).memory_on_oom == ()  # type: ignore[arg-type]


@pytest.mark.parametrize("steps, words", [
    ("1Gi", "memory_on_oom must be a list of memory sizes, e.g. ['1Gi'], not a string"),
    (["1Gi", "lots"], "memory_on_oom[1]: 'lots' is not a quantity (e.g. 500m, 2, 1Gi)"),
    (["-1Gi"], "memory_on_oom[0]: '-1Gi' is not a quantity"),
    ([1.5], "memory_on_oom[0]: 1.5 is not a quantity (write it as a string"),
    (["0"], "memory_on_oom[0]: '0' is no memory at all"),
    (["2Gi", "1Gi"], "memory_on_oom must be strictly increasing (each step gives the next attempt more memory): "
                     "'1Gi' follows '2Gi'"),
    (["1Gi", "1024Mi"], "'1024Mi' follows '1Gi'"),
    (["1Gi", "2Gi", "3Gi", "4Gi", "5Gi", "6Gi"], "memory_on_oom has 6 steps; at most 5 are allowed"),
    ({"1Gi": 1}, "memory_on_oom must be a non-empty list of memory sizes"),
])
def test_bad_sizes_are_refused_at_decoration_with_what_is_wrong(steps: Any, words: str) -> None:
    with pytest.raises(InvalidTaskError) as info:
        task(name="tests.memory_on_oom.bad", memory_on_oom=steps)(lambda app: None)
    assert words in str(info.value)


def test_sizes_below_the_tasks_own_memory_are_refused() -> None:
    own = {"requests": {"memory": "256Mi"}, "limits": {"memory": "1Gi"}}
    assert check_memory_on_oom(["1Gi", "2Gi"], own) == ("1Gi", "2Gi")
    with pytest.raises(InvalidTaskError, match=r"memory_on_oom\[0\]='512Mi' is below the memory limit of 1Gi the "
                                               r"task has without it"):
        check_memory_on_oom(["512Mi", "2Gi"], own)
    with pytest.raises(InvalidTaskError, match="below the memory request of 256Mi"):
        check_memory_on_oom(["128Mi"], {"requests": {"memory": "256Mi"}})


def test_the_tasks_own_sizes_go_in_the_spec(client: TaskClient, api: FakeCustomObjects) -> None:
    client.send("tests.memory_on_oom.crunch", "my-app", [1])
    client.send(ADD, "my-app", [1, 2])
    first, second = (c["spec"] for c in api.created)
    assert first["memoryOnOOM"] == ["1Gi", "2Gi"]
    assert "memoryOnOOM" not in second


def test_send_overrides_the_tasks_sizes_and_checks_them_against_its_resources(client: TaskClient,
                                                                              api: FakeCustomObjects) -> None:
    client.send("tests.memory_on_oom.crunch", "my-app", [1], memory_on_oom=["4Gi"])
    client.send("tests.memory_on_oom.crunch", "my-app", [1], memory_on_oom=[])  # none for this one
    client.send(ADD, "my-app", [1, 2], memory_on_oom=("256Mi", "512Mi"),
                resources={"limits": {"memory": "128Mi"}})
    first, second, third = (c["spec"] for c in api.created)
    assert first["memoryOnOOM"] == ["4Gi"] and "memoryOnOOM" not in second
    assert third["memoryOnOOM"] == ["256Mi", "512Mi"]
    with pytest.raises(InvalidTaskError, match=r"memory_on_oom\[0\]='1Gi' is below the memory limit of 2Gi"):
        client.send("tests.memory_on_oom.crunch", "my-app", [1], resources={"limits": {"memory": "2Gi"}})
    assert len(api.created) == 3  # nothing made for the refused one


def test_send_task_takes_memory_on_oom_as_an_option_not_an_argument(client: TaskClient, api: FakeCustomObjects,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lime_task.client, "_default", client)
    send_task(ADD, "my-app", 1, 2, memory_on_oom=["1Gi"])
    spec = api.created[0]["spec"]
    assert spec["memoryOnOOM"] == ["1Gi"] and spec["args"] == [1, 2] and spec["kwargs"] == {}
