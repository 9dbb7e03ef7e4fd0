"""The Helm chart (charts/limetask), through real Helm (helm-python-sdk, Helm v4).

Quick tests render and lint the chart offline: every documented mode, the values schema, the
RBAC rules, and the Pod Security Standard "restricted" for the operator pod, the HTTP endpoint's
pods and the runner pods the operator builds from the chart's settings. The e2e tests install the chart into the
cluster, check what it made, run the operator under the chart's own ServiceAccount, and
uninstall it.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm  # noqa: E402
import pytest
import yaml
from conftest import (  # noqa: E402
    ACME_IMAGE,
    REPO,
    RUNNER_RESOURCES,
    Cluster,
    Operator,
    kubeconfig_for_token,
    service_account_token,
    wait_until,
)
from limetask_operator.manifests import build_job  # noqa: E402
from limetask_operator.model import TaskView  # noqa: E402
from limetask_operator.settings import OperatorSettings  # noqa: E402

from lime_task.resource import (
    CONDITION_QUEUED,
    GROUP,
    PRIORITY_MAX,
    PRIORITY_MIN,
    QUEUE_KIND,
    QUEUE_NAME_RE,
    QUEUE_PLURAL,
    VERSION,
)

CHART = REPO / "charts" / "limetask"
RELEASE = "lt"
RELEASE_NAMESPACE = "lime-system"

SAMPLE_TASK: dict[str, Any] = {
    "apiVersion": "limetask.io/v1alpha1",
    "kind": "LimeTask",
    "metadata": {"name": "add-5f1c2a9e", "namespace": "team-a", "uid": "3b0e6f4e-2f7c-4b7e-9a53-0d6b5c1f8a21",
                 "generation": 1, "resourceVersion": "1", "creationTimestamp": "2024-05-01T10:00:00Z"},
    "spec": {"task": "acme_solution.tasks.lime.add", "app": "acme-crm", "args": [1, 2], "kwargs": {},
             "acksLate": True, "maxAttempts": 3, "timeoutSeconds": 600, "image": "evil.example.com/miner:1",
             "resources": {"limits": {"memory": "1Gi"}}},
}

# Every documented mode of the chart, by name.
MODES: dict[str, dict[str, Any]] = {
    "default": {},
    "single-namespace": {"watch": {"scope": "namespaces", "namespaces": ["team-a"]}},
    "namespace-list": {"watch": {"scope": "namespaces", "namespaces": ["team-a", "team-b", "team-c"]}},
    "cluster": {"watch": {"scope": "cluster"}},
    "no-crd": {"crds": {"install": False}},
    # Queues the chart creates (at once: the CRDs are installed another way), and the pace of Job
    # creation.
    "queues": {
        "crds": {"install": False},
        "queues": {"default": {"maxRunning": 50, "maxRunningPerApp": 10},
                   "reports": {"maxRunning": 4, "maxRunningPerNamespace": 1, "agingSeconds": 120},
                   "paused": {"maxRunning": 0},
                   "gpu": {"admission": "Kueue", "kueueQueueName": "gpu-jobs"},
                   "team-a": {"namespaceSelector": {"matchLabels": {"team": "a", "limetask.io/tenant": "acme"},
                                                    "matchExpressions": [
                                                        {"key": "frozen", "operator": "DoesNotExist"},
                                                        {"key": "tier", "operator": "In", "values": ["gold"]}]}},
                   "plain": {}},
        "queueing": {"jobCreatesPerSecond": 2.5, "jobCreatesBurst": 5, "positionRefreshSeconds": 10},
    },
    "crd-not-kept": {"crds": {"keep": False}},
    "broker-existing-secret": {"broker": {"existingSecret": {"name": "rabbitmq", "key": "amqp-url"}}},
    "broker-from-values": {"broker": {"url": "amqp://lime:secret@rabbitmq:5672/%2F", "exchange": "events.{app}"}},
    # The archive of finished tasks (PostgreSQL), its URL from an existing Secret ...
    "archive-existing-secret": {"archive": {"existingSecret": {"name": "postgres-archive", "key": "dsn"}}},
    # ... or from values (the chart makes the Secret), with every other archive value set.
    "archive-from-values": {"archive": {"url": "postgresql://lime:secret@postgres:5432/limetask",
                                        "keepInClusterSeconds": 120, "retentionDays": 7, "batchSize": 200,
                                        "lockTimeoutSeconds": 2.5, "migrateTimeoutSeconds": 900,
                                        "resultsReadTimeoutSeconds": 3, "dashboardReadTimeoutSeconds": 20}},
    "runner-settings": {
        "runner": {
            "image": {"repository": "registry.example.com/acme/runner", "tag": "2.3.4"},
            "command": ["python", "-m", "limetask_runner"],
            "env": {"LIMETASK_IMPORTS": "acme_solution.tasks.lime"},
            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}},
            "nodeSelector": {"pool": "tasks"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "tasks", "effect": "NoSchedule"}],
            "imagePullSecrets": ["acme-registry"],
            "serviceAccountName": "acme-runner",
            "userId": 20000,
        },
        "limits": {"allowImageOverride": True, "maxAttemptsCeiling": 5},
        "jobs": {"ttlSecondsAfterFinished": 7200, "deleteFinished": False},
        "tasks": {"retentionSeconds": 0},
        "operator": {
            "image": {"digest": "sha256:" + "a" * 64},
            "imagePullSecrets": ["acme-registry"],
            "workers": 8,
            "verbose": True,
            "healthPort": 8081,
            "metricsPort": 9091,
            "terminationGracePeriodSeconds": 45,
            "nodeSelector": {"pool": "system"},
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "priorityClassName": "system-cluster-critical",
            "podAnnotations": {"example.com/team": "platform"},
            "podLabels": {"team": "platform"},
            "extraEnv": [{"name": "LIMETASK_EXTRA", "value": "1"}],
        },
        "serviceAccount": {"name": "limetask-operator", "annotations": {"example.com/role": "operator"}},
    },
    # The HTTP endpoint, its tokens from values (the chart makes the Secret) ...
    "web-token-values": {
        "web": {"enabled": True, "imports": ["acme_solution.tasks.lime"],
                "tokens": {"values": {"acme-crm": "s3cret-token", "other.app": "t0ken"}}},
    },
    # ... or from an existing Secret, with every other web value set, next to a list of namespaces.
    "web-existing-secret": {
        "watch": {"namespaces": ["team-a", RELEASE_NAMESPACE]},
        "web": {
            "enabled": True,
            "image": {"repository": "registry.example.com/acme/web", "tag": "2.3.4", "pullPolicy": "Always"},
            "imagePullSecrets": ["acme-registry"],
            "replicas": 3,
            "imports": ["acme_solution.tasks.lime", "acme_solution.tasks.reports"],
            "port": 8081,
            "tokens": {"existingSecret": "acme-web-tokens"},
            "platformTokensSecret": "acme-platform-tokens",
            "service": {"type": "LoadBalancer", "port": 443},
            "resources": {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"memory": "256Mi"}},
            "nodeSelector": {"pool": "web"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"}],
            "podAnnotations": {"example.com/team": "platform"},
        },
    },
    # Everything around the workloads: two replicas of each (PodDisruptionBudgets), NetworkPolicies,
    # the endpoint's Ingress, and monitoring (ServiceMonitor, PrometheusRule, Grafana dashboard).
    "web-complete": {
        "operator": {"replicas": 2},
        "broker": {"existingSecret": {"name": "rabbitmq"}},
        "archive": {"existingSecret": {"name": "postgres-archive"}},
        "web": {
            "enabled": True, "replicas": 2, "imports": ["acme_solution.tasks.lime"],
            "tokens": {"existingSecret": "acme-web-tokens"},
            "ingress": {"enabled": True, "className": "nginx",
                        "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
                        "hosts": [{"host": "tasks.example.com"},
                                  {"host": "api.example.com", "paths": [{"path": "/v1", "pathType": "Prefix"},
                                                                        {"path": "/healthz", "pathType": "Exact"}]}],
                        "tls": [{"secretName": "tasks-example-com-tls",
                                 "hosts": ["tasks.example.com", "api.example.com"]}]},
        },
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                             "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}],
            "webFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
                        {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In",
                                                                      "values": ["crm", "erp"]}]}}],
            "apiServer": {"cidrs": ["10.96.0.1/32", "192.168.10.5/32"], "ports": [443, 6443]},
            "dns": {"to": [{"ipBlock": {"cidr": "169.254.20.10/32"}}]},
            "broker": {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "rabbitmq"}}}],
                       "ports": [5671]},
            "archive": {"to": [{"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.5.0/24"]}}], "ports": [5433]},
            "extraEgress": [{"to": [{"ipBlock": {"cidr": "10.30.0.8/32"}}],
                             "ports": [{"port": 3128, "protocol": "TCP"}]}],
        },
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}, "interval": "1m",
                               "scrapeTimeout": "20s"},
            "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"},
                               "alertLabels": {"team": "platform"}},
            "grafanaDashboard": {"enabled": True, "namespace": "monitoring", "labels": {"team": "platform"},
                                 "annotations": {"grafana_folder": "Lime Task"}},
        },
    },
}
WEB_MODES = sorted(mode for mode in MODES if mode.startswith("web-"))

# The rules the operator gets where it watches: (apiGroup, resource) -> verbs. The least that works.
# Retention (on by default) deletes finished LimeTasks.
WATCHED_NAMESPACE_RULES = {
    # create: a schedule's runs; patch: Replace cancels a run; delete: retention, the archive and
    # schedules' history limits.
    ("limetask.io", "limetasks"): {"get", "list", "watch", "create", "patch", "delete"},
    ("limetask.io", "limetasks/status"): {"update"},
    ("limetask.io", "limetasks/finalizers"): {"update"},
    ("limetask.io", "limetaskschedules"): {"get", "list", "watch"},
    ("limetask.io", "limetaskschedules/status"): {"update"},
    ("batch", "jobs"): {"create", "get", "list", "watch", "delete"},
    ("", "pods"): {"list", "watch"},
    ("", "events"): {"create", "list"},
    ("events.k8s.io", "events"): {"create"},
}
# The HTTP endpoint's Role, in the release namespace only: what TaskClient does (send: create;
# get_status: get; wait: list, watch; cancel: patch), the schedules it lists, and nothing more.
WEB_RULES = {("limetask.io", "limetasks"): {"create", "get", "list", "watch", "patch"},
             ("limetask.io", "limetaskschedules"): {"list"}}
# The HTTP endpoint checks Kubernetes bearer tokens (TokenReview, SubjectAccessReview) with the
# built-in ClusterRole for exactly that (web.kubernetesAuth, on by default).
AUTH_DELEGATOR = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"}
WEB_AUTH_BINDING = f"{RELEASE_NAMESPACE}-lt-limetask-web-auth"
# And everywhere (kopf's discovery): read-only.
DISCOVERY_RULES = {("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"}}
# Namespaces' labels, which a queue's namespaceSelector matches (and kopf's namespace observation,
# in namespaces scope): read from a watch, so list and watch only.
NAMESPACE_RULES = {("", "namespaces"): {"list", "watch"}}
# LimeTaskQueues are cluster-scoped: the operator reads them and writes their status through its
# ClusterRole in either scope (a namespace's Role could not grant them), and never changes them.
QUEUE_RULES = {("limetask.io", "limetaskqueues"): {"get", "list", "watch"},
               ("limetask.io", "limetaskqueues/status"): {"update"}}
# What the operator's ClusterRole holds in either scope.
CLUSTER_RULES = {**DISCOVERY_RULES, **QUEUE_RULES, **NAMESPACE_RULES}
# Objects without a namespace.
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "LimeTaskQueue"}

# Broker settings: the chart sets them only when a broker is configured.
BROKER_SETTINGS = {"LIMETASK_BROKER_URL", "LIMETASK_BROKER_EXCHANGE", "LIMETASK_BROKER_PUBLISH_TIMEOUT",
                   "LIMETASK_EVENT_RETRY_MAX_SECONDS"}
# Settings the chart leaves alone: it hands the broker and archive URLs over in LIMETASK_BROKER_URL
# and LIMETASK_ARCHIVE_URL, from their Secrets.
# Set per process where needed (tests running two operators on one host), never by the chart.
# LIMETASK_SCHEDULE_SECONDS: seconds-level schedules, for tests only.
NOT_FROM_CHART = {"LIMETASK_BROKER_URL_FILE", "LIMETASK_ARCHIVE_URL_FILE", "LIMETASK_LEADER_ELECTION_IDENTITY",
                  "LIMETASK_SCHEDULE_SECONDS"}
ARCHIVE_URL = MODES["archive-from-values"]["archive"]["url"]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    helm.disable_logging()  # Helm's own log lines (e.g. of `fail`) would go to stderr
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: Any, values: dict[str, Any] | None = None, *, name: str = RELEASE,
           namespace: str = RELEASE_NAMESPACE) -> list[dict[str, Any]]:
    """The chart's objects, as dicts, in template order."""
    rendered = chart.render(values or {}, name=name, namespace=namespace, is_install=True)
    objects: list[dict[str, Any]] = []
    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(rendered[path]) if doc)
    return objects


def notes(chart: Any, values: dict[str, Any] | None = None) -> str:
    rendered = chart.render(values or {}, name=RELEASE, namespace=RELEASE_NAMESPACE, is_install=True)
    return next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def component(o: dict[str, Any]) -> str:
    """operator or web: the part of the chart an object belongs to."""
    return str(o["metadata"]["labels"]["app.kubernetes.io/component"])


def of_component(objects: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    return [o for o in of_kind(objects, kind) if component(o) == name]


def operator_deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(of_component(objects, "Deployment", "operator"), "Deployment")


def web_deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(of_component(objects, "Deployment", "web"), "Deployment")


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = operator_deployment(objects)["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "operator")


def web_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = web_deployment(objects)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["web"]
    return containers[0]


def operator_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The operator container's plain environment variables (secret references left out)."""
    return {e["name"]: e["value"] for e in operator_container(objects).get("env", []) if "value" in e}


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    """Every pod spec in the rendered objects, wherever a workload keeps it, with the pod's
    annotations."""
    found = []
    for o in objects:
        spec = o.get("spec") or {}
        where = f"{o['kind']}/{o['metadata']['name']}"
        if o["kind"] == "Pod":
            found.append((where, spec, o["metadata"].get("annotations") or {}))
        elif o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            template = spec["template"]
            found.append((where, template["spec"], template.get("metadata", {}).get("annotations") or {}))
        elif o["kind"] == "CronJob":
            template = spec["jobTemplate"]["spec"]["template"]
            found.append((where, template["spec"], template.get("metadata", {}).get("annotations") or {}))
    return found


def rules_by_resource(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                out.setdefault((group, resource), set()).update(rule.get("verbs", []))
    return out


# --------------------------------------------------------------------------------------------
# Pod Security Standard "restricted" (https://kubernetes.io/docs/concepts/security/pod-security-standards/)
# --------------------------------------------------------------------------------------------

RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                           "projected", "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range"}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t"}


def restricted_violations(pod_spec: dict[str, Any], annotations: dict[str, str] | None = None) -> list[str]:
    """What keeps a pod spec from the "restricted" profile (baseline checks included), plus
    this project's own rule: a read-only root filesystem in every container."""
    problems: list[str] = []
    pod_sc = pod_spec.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(field):
            problems.append(f"{field} is true")
    for volume in pod_spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']} is of a disallowed type {sorted(kinds - RESTRICTED_VOLUME_TYPES)}")  # noqa: E501
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            problems.append(f"unsafe sysctl {sysctl.get('name')}")
    for key, value in (annotations or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and value != "runtime/default" \
                and not value.startswith("localhost/"):
            problems.append(f"AppArmor profile {value}")

    def selinux(sc: dict[str, Any], where: str) -> None:
        options = sc.get("seLinuxOptions") or {}
        if options.get("type", "") not in SELINUX_TYPES or options.get("user") or options.get("role"):
            problems.append(f"{where}: seLinuxOptions {options}")

    selinux(pod_sc, "pod")
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod: runAsUser is 0")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        problems.append(f"pod: seccompProfile {pod_seccomp}")

    containers = [*(pod_spec.get("initContainers") or []), *(pod_spec.get("containers") or []),
                  *(pod_spec.get("ephemeralContainers") or [])]
    if not pod_spec.get("containers"):
        problems.append("no containers")
    for c in containers:
        where = f"container {c.get('name')}"
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            problems.append(f"{where}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{where}: capabilities do not drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{where}: adds capabilities {caps.get('add')}")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{where}: procMount {sc['procMount']}")
        selinux(sc, where)
        run_as_non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        if run_as_non_root is not True:
            problems.append(f"{where}: runAsNonRoot is not true")
        if sc.get("runAsUser") == 0:
            problems.append(f"{where}: runAsUser is 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where}: seccompProfile is {seccomp!r}, not RuntimeDefault or Localhost")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"{where}: hostPort {port['hostPort']}")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: readOnlyRootFilesystem is not true")
    return problems


def test_restricted_checker_finds_problems() -> None:
    """The checker itself: a pod that breaks the profile in many ways is caught on each."""
    bad = {
        "hostNetwork": True,
        "securityContext": {"runAsUser": 0, "sysctls": [{"name": "kernel.msgmax", "value": "1"}]},
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
        "containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 80}],
                        "securityContext": {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]},
                                            "seccompProfile": {"type": "Unconfined"}}}],
    }
    problems = "\n".join(restricted_violations(bad))
    for expected in ("hostNetwork", "hostPath", "kernel.msgmax", "runAsUser is 0", "privileged",
                     "allowPrivilegeEscalation", "drop ALL", "SYS_ADMIN", "runAsNonRoot", "Unconfined",
                     "hostPort", "readOnlyRootFilesystem"):
        assert expected in problems, (expected, problems)


# --------------------------------------------------------------------------------------------
# Chart metadata and values
# --------------------------------------------------------------------------------------------

def test_chart_metadata(chart: Any) -> None:
    meta = chart.metadata
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == "limetask"
    assert meta["version"] == "0.1.0"
    assert meta["appVersion"] == "0.1.0"
    assert meta["kubeVersion"] == ">=1.35.0-0"


def test_helpers_are_defined() -> None:
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    for name in ("limetask.name", "limetask.fullname", "limetask.labels", "limetask.selectorLabels",
                 "limetask.serviceAccountName"):
        assert f'define "{name}"' in helpers, name


CRD_FILES = ["limetask.io_limetasks.yaml", "limetask.io_limetaskschedules.yaml", "limetask.io_limetaskqueues.yaml"]
CRD_NAMES = ["limetasks.limetask.io", "limetaskschedules.limetask.io", "limetaskqueues.limetask.io"]


def test_crd_matches_the_repository_crd() -> None:
    """The chart ships a copy of crds/, byte for byte; copy it again when a CRD changes."""
    assert sorted(p.name for p in (REPO / "crds").glob("*.yaml")) == sorted(CRD_FILES)
    assert sorted(p.name for p in (CHART / "files").glob("*.yaml")) == sorted(CRD_FILES)
    for name in CRD_FILES:
        ours = (CHART / "files" / name).read_bytes()
        theirs = (REPO / "crds" / name).read_bytes()
        assert ours == theirs, f"charts/limetask/files/{name} differs from crds/: copy it over"


def test_every_value_has_a_comment() -> None:
    """Every value in values.yaml has a `# --` comment right above it (continued on `#` lines)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    values = yaml.safe_load("\n".join(lines))
    stack: list[tuple[int, str]] = []
    missing = []
    for i, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):", line)
        if not m:
            continue
        indent, key = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [k for _, k in stack] + [key]
        stack.append((indent, key))
        if "resources" in path[:-1]:
            continue  # inside a value (a resources map) that has its comment
        value: Any = values
        for part in path:
            value = value[part]
        if isinstance(value, dict) and value and key != "resources":
            continue  # a section: its values carry the comments
        j = i - 1
        while j >= 0 and lines[j].lstrip().startswith("#") and not lines[j].lstrip().startswith("# --"):
            j -= 1
        if j < 0 or not lines[j].lstrip().startswith("# --"):
            missing.append(".".join(path))
    assert not missing, f"values without a `# --` comment: {missing}"


def _walk_schema(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for key, child in (node.get("properties") or {}).items():
        yield from _walk_schema(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from _walk_schema(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk_schema(node["additionalProperties"], f"{path}.*")


def test_schema_is_closed_everywhere(chart: Any) -> None:
    """No object in the schema takes keys it does not declare (maps declare their value type)."""
    schema = chart.schema
    assert schema is not None
    open_objects = []
    for path, node in _walk_schema(schema):
        types = node.get("type")
        if types == "object" or (isinstance(types, list) and "object" in types):
            extra = node.get("additionalProperties")
            if "properties" in node and extra is not False:
                open_objects.append(path or "<root>")
            if "properties" not in node and not isinstance(extra, dict):
                open_objects.append(path or "<root>")
    assert not open_objects, f"objects that accept unknown keys: {open_objects}"


def test_schema_and_values_cover_each_other(chart: Any) -> None:
    """Every value has a schema entry with a description, and every schema entry a default."""
    def keys(tree: dict[str, Any], prefix: str = "") -> set[str]:
        out = set()
        for key, value in tree.items():
            out.add(prefix + key)
            # resources and queues are maps the user fills (the schema says what each value holds).
            if isinstance(value, dict) and value and key not in ("resources", "queues"):
                out |= keys(value, prefix + key + ".")
        return out

    def schema_keys(node: dict[str, Any], prefix: str = "") -> set[str]:
        out = set()
        for key, child in (node.get("properties") or {}).items():
            out.add(prefix + key)
            if child.get("properties") and key != "resources":
                out |= schema_keys(child, prefix + key + ".")
        return out

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = chart.schema
    assert keys(values) == schema_keys(schema)
    undocumented = [p for p, node in _walk_schema(schema) if p and p.count("*") == 0 and "[]" not in p
                    and "description" not in node]
    assert not undocumented, f"schema entries without a description: {undocumented}"


def test_default_values_pass_the_schema(chart: Any) -> None:
    chart.validate_schema(None)
    chart.validate_schema({})


@pytest.mark.parametrize("values, message", [
    ({"bogus": 1}, "additional properties 'bogus' not allowed"),
    ({"operator": {"replicaCount": 2}}, "at '/operator': additional properties 'replicaCount' not allowed"),
    ({"operator": {"replicas": 0}}, "at '/operator/replicas': minimum: got 0, want 1"),
    ({"runner": {"image": {"repository": "r", "tag": "1", "pullPolicy": "Always"}}},
     "at '/runner/image': additional properties 'pullPolicy' not allowed"),
    ({"operator": {"workers": "many"}}, "at '/operator/workers': got string, want integer"),
    ({"crds": {"install": "yes"}}, "at '/crds/install': got string, want boolean"),
    ({"watch": {"namespaces": "team-a"}}, "at '/watch/namespaces': got string, want array"),
    ({"runner": {"env": {"DEBUG": 1}}}, "at '/runner/env/DEBUG': got number, want string"),
    ({"watch": {"scope": "everywhere"}}, "at '/watch/scope': value must be one of 'namespaces', 'cluster'"),
    ({"operator": {"image": {"pullPolicy": "Sometimes"}}}, "at '/operator/image/pullPolicy': value must be one of"),
    ({"runner": {"tolerations": [{"operator": "Maybe"}]}}, "at '/runner/tolerations/0/operator': value must be one of"),
    ({"watch": {"namespaces": ["Team_A"]}}, "at '/watch/namespaces/0': 'Team_A' does not match pattern"),
    ({"watch": {"namespaces": ["team-*"]}}, "at '/watch/namespaces/0': 'team-*' does not match pattern"),
    ({"runner": {"userId": 0}}, "at '/runner/userId': minimum: got 0, want 1"),
    ({"limits": {"maxAttemptsCeiling": 11}}, "at '/limits/maxAttemptsCeiling': maximum: got 11, want 10"),
    ({"broker": {"url": "http://rabbitmq"}}, "at '/broker/url': 'http://rabbitmq' does not match pattern"),
    ({"web": {"bogus": 1}}, "at '/web': additional properties 'bogus' not allowed"),
    ({"web": {"enabled": "yes"}}, "at '/web/enabled': got string, want boolean"),
    ({"web": {"imports": "acme_solution.tasks"}}, "at '/web/imports': got string, want array"),
    ({"web": {"imports": ["acme-solution.tasks"]}}, "at '/web/imports/0': 'acme-solution.tasks' does not match"),
    ({"web": {"port": 80}}, "at '/web/port': minimum: got 80, want 1,024"),
    ({"web": {"tokens": {"values": {"acme-crm": "two words"}}}}, "at '/web/tokens/values/acme-crm'"),
    ({"web": {"tokens": {"values": {"acme crm": "t0ken"}}}}, "invalid propertyName 'acme crm'"),
    ({"web": {"tokens": {"secret": "x"}}}, "at '/web/tokens': additional properties 'secret' not allowed"),
    ({"web": {"service": {"type": "ExternalName"}}}, "at '/web/service/type': value must be one of"),
    ({"web": {"image": {"digest": "latest"}}}, "at '/web/image/digest': 'latest' does not match pattern"),
    ({"limits": {"maxRunnerResources": {"memory": "lots"}}}, "at '/limits/maxRunnerResources/memory': 'lots' does not"),
    ({"limits": {"maxRunnerResources": {"cpu": "inf"}}}, "at '/limits/maxRunnerResources/cpu': 'inf' does not"),
    ({"limits": {"maxRunnerResources": {"cpu": -1}}}, "at '/limits/maxRunnerResources/cpu': minimum: got -1"),
    ({"runner": {"resources": {"limits": {"memory": "-1Gi"}}}}, "at '/runner/resources/limits/memory': '-1Gi'"),
    ({"limits": {"denyUnlistedResources": "no"}}, "at '/limits/denyUnlistedResources': got string, want boolean"),
    ({"archive": {"url": "mysql://lime@db/limetask"}}, "at '/archive/url': 'mysql://lime@db/limetask' does not match"),
    ({"archive": {"url": "postgresql://"}}, "at '/archive/url': 'postgresql://' does not match pattern"),
    ({"archive": {"keepInClusterSeconds": -1}}, "at '/archive/keepInClusterSeconds': minimum: got -1, want 0"),
    ({"archive": {"keepInClusterSeconds": 1.5}}, "at '/archive/keepInClusterSeconds': got number, want integer"),
    ({"archive": {"retentionDays": 36501}}, "at '/archive/retentionDays': maximum: got 36,501, want 36,500"),
    ({"archive": {"retentionDays": -1}}, "at '/archive/retentionDays': minimum: got -1, want 0"),
    ({"archive": {"batchSize": 0}}, "at '/archive/batchSize': minimum: got 0, want 1"),
    ({"archive": {"batchSize": 10001}}, "at '/archive/batchSize': maximum: got 10,001, want 10,000"),
    ({"archive": {"lockTimeoutSeconds": 0}}, "at '/archive/lockTimeoutSeconds': exclusiveMinimum: got 0, want 0"),
    ({"archive": {"migrateTimeoutSeconds": -1}}, "at '/archive/migrateTimeoutSeconds': minimum: got -1, want 0"),
    ({"archive": {"dashboardReadTimeoutSeconds": 0}},
     "at '/archive/dashboardReadTimeoutSeconds': exclusiveMinimum: got 0, want 0"),
    ({"archive": {"existingSecret": {"name": "Postgres"}}}, "at '/archive/existingSecret/name': 'Postgres' does not"),
    ({"archive": {"existingSecret": {"key": ""}}}, "at '/archive/existingSecret/key': minLength: got 0, want 1"),
    ({"archive": {"database": "x"}}, "at '/archive': additional properties 'database' not allowed"),
    ({"web": {"kubernetesAuth": "no"}}, "at '/web/kubernetesAuth': got string, want boolean"),
    ({"queues": {"Reports": {}}}, "invalid propertyName 'Reports'"),
    ({"queues": {"reports.eu": {}}}, "invalid propertyName 'reports.eu'"),
    ({"queues": {"q" * 64: {}}}, "invalid propertyName"),
    ({"queues": {"reports": {"maxRunning": -1}}}, "at '/queues/reports/maxRunning': minimum: got -1, want 0"),
    ({"queues": {"reports": {"maxRunning": 1.5}}}, "at '/queues/reports/maxRunning': got number, want integer"),
    ({"queues": {"reports": {"maxRunningPerApp": 0}}}, "at '/queues/reports/maxRunningPerApp': minimum: got 0, want 1"),
    ({"queues": {"reports": {"agingSeconds": 86401}}}, "at '/queues/reports/agingSeconds': maximum: got 86,401"),
    ({"queues": {"reports": {"maxRuning": 4}}}, "at '/queues/reports': additional properties 'maxRuning' not allowed"),
    ({"queues": {"reports": {"admission": "Volcano"}}}, "at '/queues/reports/admission': value must be one of"),
    ({"queues": {"reports": {"kueueQueueName": "lq"}}}, "at '/queues/reports': missing property 'admission'"),
    ({"queues": {"reports": {"admission": "Operator", "kueueQueueName": "lq"}}},
     "at '/queues/reports/admission': value must be 'Kueue'"),
    ({"queues": {"reports": 4}}, "at '/queues/reports': got number, want object"),
    ({"queues": {"reports": {"namespaceSelector": {"matchLabel": {"team": "a"}}}}},
     "at '/queues/reports/namespaceSelector': additional properties 'matchLabel' not allowed"),
    ({"queues": {"reports": {"namespaceSelector": {"matchLabels": {"team": "a b"}}}}},
     "at '/queues/reports/namespaceSelector/matchLabels/team': 'a b' does not match pattern"),
    ({"queues": {"reports": {"namespaceSelector": {"matchLabels": {"bad key": "a"}}}}},
     "invalid propertyName 'bad key'"),
    ({"queues": {"reports": {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Equals"}]}}}},
     "at '/queues/reports/namespaceSelector/matchExpressions/0/operator': value must be one of"),
    ({"queues": {"reports": {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In"}]}}}},
     "at '/queues/reports/namespaceSelector/matchExpressions/0': missing property 'values'"),
    ({"queues": {"reports": {"namespaceSelector": {"matchExpressions": [
        {"key": "team", "operator": "NotIn", "values": []}]}}}},
     "at '/queues/reports/namespaceSelector/matchExpressions/0/values': minItems: got 0, want 1"),
    ({"queues": {"reports": {"namespaceSelector": {"matchExpressions": [
        {"key": "team", "operator": "Exists", "values": ["a"]}]}}}},
     "at '/queues/reports/namespaceSelector/matchExpressions/0/values': maxItems: got 1, want 0"),
    ({"queues": []}, "at '/queues': got array, want object"),
    ({"queueing": {"jobCreatesPerSecond": -1}}, "at '/queueing/jobCreatesPerSecond': minimum: got -1, want 0"),
    ({"queueing": {"jobCreatesBurst": 0}}, "at '/queueing/jobCreatesBurst': minimum: got 0, want 1"),
    ({"queueing": {"positionRefreshSeconds": 0}}, "at '/queueing/positionRefreshSeconds': minimum: got 0, want 1"),
    ({"queueing": {"maxRunning": 5}}, "at '/queueing': additional properties 'maxRunning' not allowed"),
])
def test_schema_rejects_invalid_values(chart: Any, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError) as schema_error:
        chart.validate_schema(values)
    assert message in str(schema_error.value)
    # An install renders, and fails, the same way.
    with pytest.raises(helm.HelmValuesError) as render_error:
        render(chart, values)
    assert message in str(render_error.value)
    assert "limetask" in str(render_error.value)


def test_lint_reports_schema_errors() -> None:
    report = helm.lint(CHART, {"watch": {"scope": "everywhere"}}, strict=True)
    assert any("value must be one of 'namespaces', 'cluster'" in e for e in report["errors"]), report


def test_broker_url_and_existing_secret_exclude_each_other(chart: Any) -> None:
    with pytest.raises(helm.HelmRenderError, match="set either broker.url or broker.existingSecret.name, not both"):
        render(chart, {"broker": {"url": "amqp://rabbitmq", "existingSecret": {"name": "rabbitmq"}}})


def test_existing_service_account_needs_a_name(chart: Any) -> None:
    with pytest.raises(helm.HelmRenderError, match="serviceAccount.name is required"):
        render(chart, {"serviceAccount": {"create": False}})
    objects = render(chart, {"serviceAccount": {"create": False, "name": "platform-operator"}})
    assert not of_kind(objects, "ServiceAccount")
    assert operator_deployment(objects)["spec"]["template"]["spec"]["serviceAccountName"] == "platform-operator"


# --------------------------------------------------------------------------------------------
# Rendering and linting, per mode
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", sorted(MODES))
def test_renders_and_lints(chart: Any, mode: str) -> None:
    values = MODES[mode]
    objects = render(chart, values)
    for o in objects:
        assert o.get("apiVersion") and o.get("kind") and o["metadata"].get("name"), o
        assert o["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        if o["kind"] not in CLUSTER_SCOPED:
            assert o["metadata"].get("namespace"), f"{o['kind']}/{o['metadata']['name']} has no namespace"
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "ClusterRole", "ClusterRoleBinding"} <= kinds
    report = helm.lint(CHART, values, strict=True, namespace=RELEASE_NAMESPACE)
    assert report["errors"] == [], report
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report
    # The environment the chart gives the operator is valid settings.
    OperatorSettings.from_env(operator_env(objects))


def test_default_mode_watches_the_release_namespace(chart: Any) -> None:
    objects = render(chart)
    assert [(r["metadata"]["namespace"], r["metadata"]["name"]) for r in of_component(objects, "Role", "operator")] \
        == [(RELEASE_NAMESPACE, "lt-limetask")]
    # Leader election: the Lease verbs alone, in the release namespace, on the operator's Lease.
    leader = one(of_component(objects, "Role", "leader"), "Role")
    assert leader["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert leader["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["lt-limetask"],
         "verbs": ["get", "update"]}]
    assert operator_env(objects)["LIMETASK_LEADER_ELECTION_LEASE"] == "lt-limetask"
    assert operator_container(objects)["args"][0] == f"--namespace={RELEASE_NAMESPACE}"
    assert [c["metadata"]["annotations"] for c in of_kind(objects, "CustomResourceDefinition")] == [
        {"helm.sh/resource-policy": "keep"}] * 3
    assert one(objects, "ServiceAccount")["metadata"]["name"] == "lt-limetask"
    assert not of_kind(objects, "Secret")
    env = {e["name"] for e in operator_container(objects)["env"]}
    assert not env & BROKER_SETTINGS, "no broker is configured by default"
    assert "LIMETASK_ARCHIVE_URL" not in env, "no archive is configured by default"


def test_namespace_list_gets_a_role_in_each_namespace(chart: Any) -> None:
    objects = render(chart, MODES["namespace-list"])
    namespaces = ["team-a", "team-b", "team-c"]
    assert sorted(r["metadata"]["namespace"] for r in of_component(objects, "Role", "operator")) == namespaces
    bindings = of_component(objects, "RoleBinding", "operator")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == namespaces
    for b in bindings:
        assert b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "lt-limetask"}
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": "lt-limetask", "namespace": RELEASE_NAMESPACE}]
    args = operator_container(objects)["args"]
    assert [a for a in args if a.startswith("--namespace")] == [f"--namespace={n}" for n in namespaces]
    assert "--all-namespaces" not in args


def test_cluster_mode_uses_a_cluster_role(chart: Any) -> None:
    objects = render(chart, MODES["cluster"])
    assert not of_component(objects, "Role", "operator") and not of_component(objects, "RoleBinding", "operator")
    role = one(of_component(objects, "ClusterRole", "operator"), "ClusterRole")
    assert rules_by_resource(role["rules"]) == {**CLUSTER_RULES, **WATCHED_NAMESPACE_RULES}
    binding = one(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"] == f"{RELEASE_NAMESPACE}-lt-limetask"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "lt-limetask", "namespace": RELEASE_NAMESPACE}]
    assert "--all-namespaces" in operator_container(objects)["args"]


def test_crd_install_and_keep(chart: Any) -> None:
    assert not of_kind(render(chart, MODES["no-crd"]), "CustomResourceDefinition")
    crds = of_kind(render(chart, MODES["crd-not-kept"]), "CustomResourceDefinition")
    assert [c["metadata"]["name"] for c in crds] == CRD_NAMES
    for crd, name in zip(crds, CRD_FILES, strict=True):
        assert "helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {})
        assert crd["spec"] == yaml.safe_load((REPO / "crds" / name).read_text())["spec"]


# --------------------------------------------------------------------------------------------
# The CRDs themselves (crds/, which the chart copies)
# --------------------------------------------------------------------------------------------

def crd_doc(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "crds" / name).read_text())  # type: ignore[no-any-return]


def crd_schema(name: str) -> dict[str, Any]:
    versions = crd_doc(name)["spec"]["versions"]
    assert len(versions) == 1
    return versions[0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def _structural_problems(node: dict[str, Any], path: str) -> list[str]:
    """What keeps a schema from being structural (every node typed, or explicitly any JSON or
    int-or-string), and fields without a description under spec and status."""
    problems = []
    if not (node.get("type") or node.get("x-kubernetes-preserve-unknown-fields")
            or node.get("x-kubernetes-int-or-string")):
        problems.append(f"{path}: no type")
    if node.get("type") == "object" and "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: both properties and additionalProperties")
    for key, child in (node.get("properties") or {}).items():
        problems += _structural_problems(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        problems += _structural_problems(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        problems += _structural_problems(node["additionalProperties"], f"{path}.*")
    return problems


def _schema_at(schema: dict[str, Any], json_path: str) -> dict[str, Any] | None:
    """The schema node a printer column's jsonPath reads (.a.b, .a[?(...)].b), or None."""
    node: dict[str, Any] | None = schema
    for part in re.findall(r"\.([A-Za-z]+)(\[[^\]]*\])?", json_path):
        name, index = part
        node = ((node or {}).get("properties") or {}).get(name)
        if node is not None and index:
            node = node.get("items")
    return node


@pytest.mark.parametrize("name", CRD_FILES)
def test_crd_is_structural_and_its_columns_exist(name: str) -> None:
    doc = crd_doc(name)
    schema = crd_schema(name)
    assert _structural_problems(schema, "") == []
    assert set(schema["properties"]["metadata"]["properties"]) == {"name"}, "metadata may only restrict the name"
    assert doc["spec"]["names"]["categories"] == ["lime"]
    assert doc["spec"]["group"] == GROUP and doc["spec"]["versions"][0]["name"] == VERSION
    assert doc["spec"]["versions"][0]["subresources"] == {"status": {}}
    for column in doc["spec"]["versions"][0]["additionalPrinterColumns"]:
        if column["jsonPath"] == ".metadata.creationTimestamp":
            continue
        node = _schema_at(schema, column["jsonPath"])
        assert node is not None, f"{name}: column {column['name']} reads {column['jsonPath']}, which is not declared"
        assert node.get("type") == {"date": "string"}.get(column["type"], column["type"]), column


def test_limetask_spec_is_immutable_field_by_field() -> None:
    """Every field but args and kwargs (a rule cannot compare JSON holding null) keeps its value,
    and no optional field may appear or disappear: queue and priority as much as the others."""
    spec = crd_schema("limetask.io_limetasks.yaml")["properties"]["spec"]
    rule = spec["x-kubernetes-validations"][0]["rule"]
    for field, node in spec["properties"].items():
        if field in ("args", "kwargs"):
            continue
        assert {"rule": "self == oldSelf",
                "message": f"spec.{field} is immutable once created; create a new LimeTask instead"} in \
            node["x-kubernetes-validations"], field
        if field not in spec["required"]:
            assert f"has(self.{field}) == has(oldSelf.{field})" in rule, field
    assert {"queue", "priority"} <= set(spec["properties"])


def test_limetask_crd_has_the_queue_fields() -> None:
    doc = crd_doc("limetask.io_limetasks.yaml")
    schema = crd_schema("limetask.io_limetasks.yaml")
    spec, status = schema["properties"]["spec"]["properties"], schema["properties"]["status"]["properties"]
    # The names lime_task.resource fixes, and the same bounds the client checks.
    assert spec["queue"]["type"] == "string" and spec["queue"]["pattern"] == QUEUE_NAME_RE.pattern
    assert spec["queue"]["maxLength"] == 63 and "default" not in spec["queue"]
    assert (spec["priority"]["type"], spec["priority"]["minimum"], spec["priority"]["maximum"]) == \
        ("integer", PRIORITY_MIN, PRIORITY_MAX)
    assert "default" not in spec["priority"], "existing LimeTasks must not change: absent means 0"
    assert "qos" in spec["queue"]["description"]
    queue = status["queue"]
    assert {k: v["type"] for k, v in queue["properties"].items()} == {
        "name": "string", "attempt": "integer", "position": "integer", "waiting": "integer", "since": "string",
        "updatedAt": "string"}
    assert queue["properties"]["since"]["format"] == queue["properties"]["updatedAt"]["format"] == "date-time"
    conditions = status["conditions"]["description"]
    for word in (CONDITION_QUEUED, "Waiting", "QueueNotFound", "QueuePaused", "QueueRateLimited", "QueueForbidden",
                 "Kueue", "Admitted"):
        assert word in conditions, word
    columns = {c["name"]: c for c in doc["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert columns["Queue"] == {"name": "Queue", "type": "string", "jsonPath": ".spec.queue", "priority": 1}
    # The columns of `kubectl get lt` stay as they were.
    assert [n for n, c in columns.items() if not c.get("priority")] == ["Task", "App", "State", "Attempts", "Age"]


def test_queue_crd() -> None:
    doc = crd_doc("limetask.io_limetaskqueues.yaml")
    assert doc["metadata"]["name"] == f"{QUEUE_PLURAL}.{GROUP}"
    spec = doc["spec"]
    assert spec["scope"] == "Cluster"
    assert spec["names"] == {"kind": QUEUE_KIND, "listKind": f"{QUEUE_KIND}List", "plural": QUEUE_PLURAL,
                             "singular": "limetaskqueue", "shortNames": ["ltq"], "categories": ["lime"]}
    version = spec["versions"][0]
    assert (version["served"], version["storage"]) == (True, True)
    columns = version["additionalPrinterColumns"]
    assert [(c["name"], c["type"], c["jsonPath"], c.get("priority", 0)) for c in columns] == [
        ("Max Running", "integer", ".spec.maxRunning", 0),
        ("Per App", "integer", ".spec.maxRunningPerApp", 1),
        ("Running", "integer", ".status.running", 0),
        ("Waiting", "integer", ".status.waiting", 0),
        ("Admission", "string", ".spec.admission", 0),
        ("Age", "date", ".metadata.creationTimestamp", 0)]
    schema = version["schema"]["openAPIV3Schema"]
    # A queue's name is what tasks give in spec.queue: a DNS label.
    name = schema["properties"]["metadata"]["properties"]["name"]
    assert (name["pattern"], name["maxLength"]) == (QUEUE_NAME_RE.pattern, 63)
    assert "required" not in schema, "a queue without a spec is a queue without limits"
    queue = schema["properties"]["spec"]
    assert "required" not in queue
    bounds = {field: (node["type"], node.get("minimum"), node.get("maximum"), node.get("default"))
              for field, node in queue["properties"].items() if node["type"] == "integer"}
    assert bounds == {"maxRunning": ("integer", 0, None, None), "maxRunningPerNamespace": ("integer", 1, None, None),
                      "maxRunningPerApp": ("integer", 1, None, None), "agingSeconds": ("integer", 1, 86400, 60),
                      "startTimeoutSeconds": ("integer", 1, 86400, None), "maxPriority": ("integer", -1000, 1000, None)}
    pace = queue["properties"]["maxStartsPerSecond"]
    assert (pace["type"], pace["minimum"], pace["exclusiveMinimum"], pace["maximum"]) == ("number", 0, True, 1000)
    admission = queue["properties"]["admission"]
    assert (admission["enum"], admission["default"]) == (["Operator", "Kueue"], "Operator")
    assert queue["properties"]["kueueQueueName"]["pattern"] == QUEUE_NAME_RE.pattern
    assert queue["x-kubernetes-validations"] == [
        {"rule": "!has(self.kueueQueueName) || (has(self.admission) && self.admission == 'Kueue')",
         "message": "kueueQueueName applies only with admission Kueue"}]
    status = schema["properties"]["status"]["properties"]
    assert {k: (v["type"], v.get("format")) for k, v in status.items()} == {
        "running": ("integer", None), "waiting": ("integer", None), "oldestWaitingSince": ("string", "date-time"),
        "observedGeneration": ("integer", None), "updatedAt": ("string", "date-time"),
        "unlistedNamespaces": ("array", None)}
    # A description on every field (metadata may hold nothing but restrictions of the name).
    missing = [p for p, node in _walk_schema(schema) if p not in ("", ".metadata") and "description" not in node]
    assert missing == [], missing


def test_broker_from_an_existing_secret(chart: Any) -> None:
    objects = render(chart, MODES["broker-existing-secret"])
    assert not of_kind(objects, "Secret"), "the chart must not make a Secret when one is given"
    env = {e["name"]: e for e in operator_container(objects)["env"]}
    assert env["LIMETASK_BROKER_URL"]["valueFrom"] == {"secretKeyRef": {"name": "rabbitmq", "key": "amqp-url"}}
    assert env["LIMETASK_BROKER_EXCHANGE"]["value"] == "lime.{app}"
    assert "rabbitmq" in notes(chart, MODES["broker-existing-secret"])


def test_broker_from_values(chart: Any) -> None:
    objects = render(chart, MODES["broker-from-values"])
    secret = one(objects, "Secret")
    assert secret["metadata"]["name"] == "lt-limetask-broker"
    assert secret["stringData"] == {"url": "amqp://lime:secret@rabbitmq:5672/%2F"}
    env = {e["name"]: e for e in operator_container(objects)["env"]}
    assert env["LIMETASK_BROKER_URL"]["valueFrom"] == {"secretKeyRef": {"name": "lt-limetask-broker", "key": "url"}}
    assert env["LIMETASK_BROKER_EXCHANGE"]["value"] == "events.{app}"
    # The URL is never in the Deployment itself; a new URL restarts the operator.
    deployment = one(objects, "Deployment")
    assert "secret@rabbitmq" not in json.dumps(deployment)
    before = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/broker"]
    other = one(render(chart, {"broker": {"url": "amqp://other"}}), "Deployment")
    assert other["spec"]["template"]["metadata"]["annotations"]["checksum/broker"] != before


def archive_url_ref(container: dict[str, Any]) -> dict[str, Any] | None:
    """Where a container's LIMETASK_ARCHIVE_URL comes from (a secretKeyRef), or None."""
    env = {e["name"]: e for e in container.get("env", [])}
    if "LIMETASK_ARCHIVE_URL" not in env:
        return None
    assert "value" not in env["LIMETASK_ARCHIVE_URL"], "the archive URL comes from a Secret, never a value"
    return env["LIMETASK_ARCHIVE_URL"]["valueFrom"]  # type: ignore[no-any-return]


def test_archive_is_off_by_default(chart: Any) -> None:
    objects = render(chart)
    assert archive_url_ref(operator_container(objects)) is None
    assert not of_kind(objects, "Secret")
    # The other archive settings are always given, with the operator's own defaults.
    env = operator_env(objects)
    assert (env["LIMETASK_ARCHIVE_KEEP_SECONDS"], env["LIMETASK_ARCHIVE_RETENTION_DAYS"],
            env["LIMETASK_ARCHIVE_BATCH_SIZE"]) == ("600", "30", "500")
    settings, defaults = OperatorSettings.from_env(env), OperatorSettings()
    assert settings.archive_url is None
    assert (settings.archive_keep_seconds, settings.archive_retention_days, settings.archive_batch_size,
            settings.archive_lock_timeout_seconds, settings.archive_migrate_timeout_seconds) == \
        (defaults.archive_keep_seconds, defaults.archive_retention_days, defaults.archive_batch_size,
         defaults.archive_lock_timeout_seconds, defaults.archive_migrate_timeout_seconds)
    assert "No archive is configured" in notes(chart)


def test_archive_from_an_existing_secret(chart: Any) -> None:
    objects = render(chart, MODES["archive-existing-secret"])
    assert not of_kind(objects, "Secret"), "the chart must not make a Secret when one is given"
    assert archive_url_ref(operator_container(objects)) == {"secretKeyRef": {"name": "postgres-archive", "key": "dsn"}}
    # The key defaults to "url".
    default_key = render(chart, {"archive": {"existingSecret": {"name": "postgres-archive"}}})
    assert archive_url_ref(operator_container(default_key)) == {"secretKeyRef": {"name": "postgres-archive",
                                                                                 "key": "url"}}
    assert "Secret postgres-archive" in notes(chart, MODES["archive-existing-secret"])


def test_archive_from_values(chart: Any) -> None:
    objects = render(chart, MODES["archive-from-values"])
    secret = one(objects, "Secret")
    assert secret["metadata"]["name"] == "lt-limetask-archive"
    assert component(secret) == "operator"
    assert secret["type"] == "Opaque" and secret["stringData"] == {"url": ARCHIVE_URL}
    assert archive_url_ref(operator_container(objects)) == {"secretKeyRef": {"name": "lt-limetask-archive",
                                                                             "key": "url"}}
    # The values reach the operator's settings; with the Secret's URL (as the kubelet hands it
    # over), they are valid settings with the archive on.
    env = operator_env(objects)
    settings = OperatorSettings.from_env({**env, "LIMETASK_ARCHIVE_URL": secret["stringData"]["url"]})
    assert settings.archive_url is not None and settings.archive_url.get_secret_value() == ARCHIVE_URL
    assert (settings.archive_keep_seconds, settings.archive_retention_days, settings.archive_batch_size) == \
        (120, 7, 200)
    assert (settings.archive_lock_timeout_seconds, settings.archive_migrate_timeout_seconds) == (2.5, 900)
    # The endpoint reads within the times given.
    from lime_task.archive import ReadLimits

    web_env = {e["name"]: e.get("value", "") for e in web_container(render(
        chart, {**MODES["archive-from-values"], **MODES["web-token-values"]}))["env"]}
    limits = ReadLimits.from_env(web_env)
    assert (limits.results.timeout, limits.dashboard.timeout) == (3, 20)
    # The URL is never in the Deployment itself; a new URL restarts the operator.
    deployment = operator_deployment(objects)
    assert "secret@postgres" not in json.dumps(deployment)
    before = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/archive"]
    other = operator_deployment(render(chart, {"archive": {"url": "postgresql://lime:other@postgres/limetask"}}))
    assert other["spec"]["template"]["metadata"]["annotations"]["checksum/archive"] != before
    assert before != operator_deployment(render(chart))["spec"]["template"]["metadata"]["annotations"][
        "checksum/archive"]
    text = notes(chart, MODES["archive-from-values"])
    assert "archived to PostgreSQL (URL from Secret lt-limetask-archive)" in text and "120 s" in text
    assert "secret@postgres" not in text


def test_archive_zero_retention_days_keeps_archived_tasks(chart: Any) -> None:
    objects = render(chart, {"archive": {"url": ARCHIVE_URL, "retentionDays": 0, "keepInClusterSeconds": 0}})
    settings = OperatorSettings.from_env({**operator_env(objects), "LIMETASK_ARCHIVE_URL": ARCHIVE_URL})
    assert (settings.archive_retention_days, settings.archive_keep_seconds) == (0, 0)
    assert "the archive keeps them forever" in notes(chart, {"archive": {"url": ARCHIVE_URL, "retentionDays": 0}})


def test_archive_url_and_existing_secret_exclude_each_other(chart: Any) -> None:
    values = {"archive": {"url": ARCHIVE_URL, "existingSecret": {"name": "postgres-archive"}}}
    chart.validate_schema(values)  # each value is valid alone: the template says what is wrong
    with pytest.raises(helm.HelmRenderError, match="set either archive.url or archive.existingSecret.name, not both"):
        render(chart, values)


def test_archive_keeps_the_right_to_delete_tasks(chart: Any) -> None:
    """Archived LimeTasks are deleted after keepInClusterSeconds, whatever tasks.retentionSeconds
    says (it does not apply with the archive); without it, schedules' history limits still delete."""
    for mode in ("archive-existing-secret", "archive-from-values"):
        values = {**MODES[mode], "tasks": {"retentionSeconds": 0}}
        for role in of_component(render(chart, values), "Role", "operator"):
            assert rules_by_resource(role["rules"]) == WATCHED_NAMESPACE_RULES, mode
        cluster = render(chart, {**values, "watch": {"scope": "cluster"}})
        role = one(of_component(cluster, "ClusterRole", "operator"), "ClusterRole")
        assert rules_by_resource(role["rules"]) == {**CLUSTER_RULES, **WATCHED_NAMESPACE_RULES}, mode
    for role in of_component(render(chart, {"tasks": {"retentionSeconds": 0}}), "Role", "operator"):
        assert rules_by_resource(role["rules"]) == WATCHED_NAMESPACE_RULES


def test_names_fit_in_63_characters(chart: Any) -> None:
    long_release = "a-release-name-that-is-as-long-as-helm-allows-it-1234"  # 53 characters
    assert len(long_release) == 53
    for o in render(chart, MODES["web-token-values"], name=long_release):
        assert len(o["metadata"]["name"]) <= 63, o["metadata"]["name"]
    assert one(render(chart, {"fullnameOverride": "ops"}), "Deployment")["metadata"]["name"] == "ops"
    assert web_deployment(render(chart, {**MODES["web-token-values"], "fullnameOverride": "ops"}))["metadata"]["name"] \
        == "ops-web"
    assert one(render(chart, name="limetask"), "Deployment")["metadata"]["name"] == "limetask"


def test_notes_say_how_to_start_a_first_task(chart: Any) -> None:
    text = notes(chart)
    assert "kind: LimeTask" in text and "task: acme_solution.tasks.lime.add" in text
    assert f"kubectl -n {RELEASE_NAMESPACE} create -f -" in text
    assert "send_task(" in text
    assert "kubectl get crd" in notes(chart, MODES["no-crd"])
    assert "every namespace" in notes(chart, MODES["cluster"])


# --------------------------------------------------------------------------------------------
# Queues (queues, queueing)
# --------------------------------------------------------------------------------------------

def queues_of(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in of_kind(objects, QUEUE_KIND)}


def test_lime_qualities_of_service_by_default(chart: Any) -> None:
    """qos="asap" and qos="background" work out of the box: the chart makes their queues, and the
    default queue, with the limits in values; the operator knows them, and the default queue."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["queues"] == {"default": {"maxRunning": 20}, "asap": {"maxRunning": 20},
                                "background": {"maxRunning": 5}}
    queues = queues_of(render(chart, MODES["no-crd"]))
    assert {name: q["spec"] for name, q in queues.items()} == values["queues"]
    env = operator_env(render(chart))
    assert env["LIMETASK_DEFAULT_QUEUE"] == "default"
    assert json.loads(env["LIMETASK_OPEN_QUEUES"]) == ["asap", "background", "default"]
    settings = OperatorSettings.from_env(env)
    assert (settings.default_queue, settings.open_queues) == ("default", ["asap", "background", "default"])
    # Limits and the default queue's name are values; a queue is taken out with null.
    changed = {"crds": {"install": False}, "queueing": {"defaultQueue": "standard"},
               "queues": {"asap": {"maxRunning": 50}, "background": None, "standard": {"maxRunning": 8}}}
    objects = render(chart, changed)
    assert {name: q["spec"] for name, q in queues_of(objects).items()} == {
        "default": {"maxRunning": 20}, "asap": {"maxRunning": 50}, "standard": {"maxRunning": 8}}
    env = operator_env(objects)
    assert env["LIMETASK_DEFAULT_QUEUE"] == "standard"
    assert json.loads(env["LIMETASK_OPEN_QUEUES"]) == ["asap", "default", "standard"]
    none = operator_env(render(chart, {"queues": None}))
    assert json.loads(none["LIMETASK_OPEN_QUEUES"]) == [] and OperatorSettings.from_env(none).open_queues == []


@pytest.mark.parametrize(("values", "message"), [
    ({"queueing": {"defaultQueue": "Standard"}}, "at '/queueing/defaultQueue'"),
    ({"schedules": {"enabled": "no"}}, "at '/schedules/enabled': got string, want boolean"),
    ({"schedules": {"defaultTimeZone": "../etc/passwd"}}, "at '/schedules/defaultTimeZone'"),
    ({"schedules": {"suspend": True}}, "at '/schedules': additional properties 'suspend' not allowed"),
    ({"tasks": {"timeLimitSeconds": -1}}, "at '/tasks/timeLimitSeconds': minimum: got -1, want 0"),
    ({"tasks": {"softTimeLimitSeconds": "1h"}}, "at '/tasks/softTimeLimitSeconds': got string, want number"),
])
def test_installation_defaults_are_checked(chart: Any, values: dict[str, Any], message: str) -> None:
    with pytest.raises(Exception) as info:
        render(chart, values)
    assert message in str(info.value)


def test_installation_defaults_reach_the_operator(chart: Any) -> None:
    """Lime's tasks_config: schedules on or off, their default time zone, and default time limits."""
    env = operator_env(render(chart))
    assert (env["LIMETASK_ENABLE_SCHEDULED_TASKS"], env["LIMETASK_DEFAULT_TIME_ZONE"],
            env["LIMETASK_DEFAULT_TIME_LIMIT"], env["LIMETASK_DEFAULT_SOFT_TIME_LIMIT"]) == ("true", "", "0", "0")
    settings = OperatorSettings.from_env(env)
    assert (settings.enable_scheduled_tasks, settings.default_time_zone, settings.default_time_limit,
            settings.default_soft_time_limit) == (True, "", 0, 0)
    env = operator_env(render(chart, {"schedules": {"enabled": False, "defaultTimeZone": "Europe/Stockholm"},
                                      "tasks": {"timeLimitSeconds": 3600, "softTimeLimitSeconds": 3300.5}}))
    settings = OperatorSettings.from_env(env)
    assert (settings.enable_scheduled_tasks, settings.default_time_zone, settings.default_time_limit,
            settings.default_soft_time_limit) == (False, "Europe/Stockholm", 3600, 3300.5)


def test_queues_are_ordinary_objects_of_the_release(chart: Any) -> None:
    """Each key of `queues` is a LimeTaskQueue with that spec: not a hook, so that an upgrade
    changes it in place and a queue taken out of the values is deleted."""
    objects = render(chart, MODES["queues"])
    queues = queues_of(objects)
    assert queues.keys() == MODES["queues"]["queues"].keys() | {"asap", "background"}  # the chart's own too
    for name, queue in queues.items():
        assert queue["apiVersion"] == f"{GROUP}/{VERSION}"
        assert "namespace" not in queue["metadata"], "LimeTaskQueues are cluster-scoped"
        assert "annotations" not in queue["metadata"], "no helm.sh/hook"
        assert queue["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert queue["spec"] == MODES["queues"]["queues"].get(name, yaml.safe_load(
            (CHART / "values.yaml").read_text())["queues"].get(name)), name
        assert QUEUE_NAME_RE.match(name)
    # Whole numbers stay integers (the CRD's fields are integers), 0 included.
    assert [type(v) for v in queues["reports"]["spec"].values()] == [int, int, int]
    assert queues["paused"]["spec"] == {"maxRunning": 0}
    assert queues["plain"]["spec"] == {}
    assert "Queues: asap, background, default, gpu, paused, plain, reports, team-a (kubectl get ltq)." in notes(
        chart, MODES["queues"])
    assert "WARNING" not in notes(chart, MODES["queues"])


def test_queues_wait_for_the_crd_they_come_with(chart: Any) -> None:
    """Helm maps every object of a release before it creates any, so it cannot create a
    LimeTaskQueue in the install that creates its CRD: with crds.install, queues are rendered only
    once the API server serves them (here, offline, it does not), and NOTES say to upgrade."""
    values = {"queues": MODES["queues"]["queues"]}
    objects = render(chart, values)
    assert queues_of(objects) == {}
    assert [c["metadata"]["name"] for c in of_kind(objects, "CustomResourceDefinition")] == CRD_NAMES
    text = notes(chart, values)
    assert "Queues asap, background, default, gpu, paused, plain, reports, team-a were not created yet" in text
    assert "Run the same helm upgrade once more" in text
    # The operator runs the tasks of the chart's queues with no limit until then: nothing waits.
    assert "those of the default queue (default), run with no limit" in text and "WARNING" not in text
    assert json.loads(operator_env(objects)["LIMETASK_OPEN_QUEUES"]) == sorted(values["queues"].keys() | {
        "asap", "background"})
    template = (CHART / "templates" / "queues.yaml").read_text()
    assert 'APIVersions.Has "limetask.io/v1alpha1/LimeTaskQueue"' in template
    assert "helm.sh/hook" not in template.replace("helm.sh/hook annotations", "")


def test_queueing_values_reach_the_operator(chart: Any) -> None:
    env = operator_env(render(chart))
    assert (env["LIMETASK_JOB_CREATES_PER_SECOND"], env["LIMETASK_JOB_CREATES_BURST"],
            env["LIMETASK_QUEUE_POSITION_REFRESH_SECONDS"]) == ("20", "20", "30")
    settings, defaults = OperatorSettings.from_env(env), OperatorSettings()
    names = ("job_creates_per_second", "job_creates_burst", "queue_position_refresh_seconds")
    assert [getattr(settings, n) for n in names] == [getattr(defaults, n) for n in names] == [20, 20, 30]
    env = operator_env(render(chart, MODES["queues"]))
    assert (env["LIMETASK_JOB_CREATES_PER_SECOND"], env["LIMETASK_JOB_CREATES_BURST"],
            env["LIMETASK_QUEUE_POSITION_REFRESH_SECONDS"]) == ("2.5", "5", "10")
    settings = OperatorSettings.from_env(env)
    assert [getattr(settings, n) for n in names] == [2.5, 5, 10]
    # The ceiling of priorities: 100 by default (the operator's own default too), and namespaces' own.
    assert (env["LIMETASK_MAX_PRIORITY"], env["LIMETASK_NAMESPACE_MAX_PRIORITY"]) == ("100", "{}")
    assert settings.max_priority == defaults.max_priority == 100
    ceilings = operator_env(render(chart, {"queueing": {"maxPriority": -5, "namespaceMaxPriority": {
        "batch": 0, "platform": 1000}}}))
    settings = OperatorSettings.from_env(ceilings)
    assert (settings.max_priority, settings.namespace_max_priority) == (-5, {"batch": 0, "platform": 1000})
    # 0: no limit on the pace of Job creation.
    unlimited = operator_env(render(chart, {"queueing": {"jobCreatesPerSecond": 0}}))
    assert unlimited["LIMETASK_JOB_CREATES_PER_SECOND"] == "0"
    assert OperatorSettings.from_env(unlimited).job_creates_per_second == 0


@pytest.mark.parametrize("mode", ["default", "namespace-list", "cluster", "queues"])
def test_operator_reads_queues_cluster_wide_in_either_scope(chart: Any, mode: str) -> None:
    objects = render(chart, MODES[mode])
    cluster_role = one(of_component(objects, "ClusterRole", "operator"), "ClusterRole")
    rules = rules_by_resource(cluster_role["rules"])
    assert {k: rules[k] for k in QUEUE_RULES} == QUEUE_RULES
    for role in of_kind(objects, "Role"):
        assert not [k for k in rules_by_resource(role["rules"]) if k[1].startswith("limetaskqueues")], role
    # Nobody else: not the endpoint, not the default user roles.
    for role in of_kind(objects, "ClusterRole"):
        if role is not cluster_role:
            assert "limetaskqueues" not in json.dumps(role["rules"]), role["metadata"]["name"]


# --------------------------------------------------------------------------------------------
# RBAC
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", sorted(MODES))
def test_rbac_is_least_privilege(chart: Any, mode: str) -> None:
    objects = render(chart, MODES[mode])
    roles = of_kind(objects, "Role") + of_kind(objects, "ClusterRole")
    assert roles
    for role in roles:
        where = f"{role['kind']}/{role['metadata']['name']}"
        text = json.dumps(role["rules"])
        assert "*" not in text, f"{where}: a wildcard in {text}"
        for rule in role["rules"]:
            resources, verbs = set(rule.get("resources", [])), set(rule.get("verbs", []))
            assert "nonResourceURLs" not in rule, where
            assert not verbs & {"escalate", "bind", "impersonate", "deletecollection"}, (where, rule)
            if "pods" in resources and "" in rule["apiGroups"]:
                assert not verbs & {"create", "update", "patch", "delete"}, (where, rule)
            assert not resources & {"pods/exec", "pods/attach", "pods/portforward", "pods/proxy", "pods/ephemeralcontainers",  # noqa: E501
                                    "serviceaccounts/token", "nodes/proxy"}, (where, rule)
            if resources & {"secrets", "configmaps"}:
                assert rule.get("resourceNames"), f"{where}: secrets without resourceNames: {rule}"
    # Exactly the rules the operator needs; at cluster level in namespace scope, read-only ones
    # and the queues' status (LimeTaskQueues are cluster-scoped).
    cluster_role = one(of_component(objects, "ClusterRole", "operator"), "ClusterRole")
    watched_rules = WATCHED_NAMESPACE_RULES
    if MODES[mode].get("watch", {}).get("scope") == "cluster":
        assert rules_by_resource(cluster_role["rules"]) == {**CLUSTER_RULES, **watched_rules}
    else:
        assert rules_by_resource(cluster_role["rules"]) == CLUSTER_RULES
        for role in of_component(objects, "Role", "operator"):
            assert rules_by_resource(role["rules"]) == watched_rules
    # Users, through the default roles: everything but the status, which only the operator writes.
    users = {r["metadata"]["name"]: r for r in of_component(objects, "ClusterRole", "users")}
    assert users.keys() == {f"{RELEASE_NAMESPACE}-lt-limetask-edit", f"{RELEASE_NAMESPACE}-lt-limetask-view"}
    for role in users.values():
        for rule in role["rules"]:
            writes = set(rule["verbs"]) & {"create", "update", "patch", "delete"}
            assert not ("limetasks/status" in rule["resources"] and writes), role
            # Cluster-scoped queues are the platform team's; roles granted in a namespace cannot
            # grant them anyway.
            assert not {r for r in rule["resources"] if r.startswith("limetaskqueues")}, role
    # The HTTP endpoint: one Role, in the release namespace, with exactly what its client uses.
    web_roles = of_component(objects, "Role", "web")
    if MODES[mode].get("web", {}).get("enabled"):
        assert [(r["metadata"]["namespace"], rules_by_resource(r["rules"])) for r in web_roles] == \
            [(RELEASE_NAMESPACE, WEB_RULES)]
    else:
        assert web_roles == [] and of_component(objects, "ServiceAccount", "web") == []
    # Each binding names its own component's ServiceAccount (the operator's may be an existing one).
    operator_account = "limetask-operator" if mode == "runner-settings" else "lt-limetask"
    accounts = {"operator": operator_account, "leader": operator_account, "web": "lt-limetask-web"}
    for sa in of_kind(objects, "ServiceAccount"):
        assert sa["metadata"]["name"] == accounts[component(sa)]
    for binding in of_kind(objects, "RoleBinding") + of_kind(objects, "ClusterRoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": accounts[component(binding)],
                                        "namespace": RELEASE_NAMESPACE}]
        if binding["roleRef"] == AUTH_DELEGATOR:
            # The one built-in role: the endpoint checks Kubernetes tokens (web.kubernetesAuth).
            assert (binding["kind"], component(binding)) == ("ClusterRoleBinding", "web"), binding
        else:
            assert binding["roleRef"]["name"] == binding["metadata"]["name"]


# --------------------------------------------------------------------------------------------
# Pod security, health and settings
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_rendered_pod_is_restricted(chart: Any, mode: str) -> None:
    objects = render(chart, MODES[mode])
    specs = pod_specs(objects)
    expected = ["Deployment/lt-limetask"]
    if MODES[mode].get("web", {}).get("enabled"):
        expected.append("Deployment/lt-limetask-web")
    assert sorted(name for name, _, _ in specs) == expected
    for name, spec, pod_annotations in specs:
        assert restricted_violations(spec, pod_annotations) == [], name


@pytest.mark.parametrize("mode", ["default", "runner-settings"])
def test_runner_jobs_from_chart_settings_are_restricted(chart: Any, mode: str) -> None:
    """The Job the operator builds with the settings the chart gives it meets "restricted" too."""
    settings = OperatorSettings.from_env(operator_env(render(chart, MODES[mode])))
    job = build_job(TaskView.from_body(SAMPLE_TASK), 1, settings)
    pod = job["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsUser"] == settings.runner_user_id != 0


def test_runner_job_with_operator_defaults_is_restricted() -> None:
    job = build_job(TaskView.from_body(SAMPLE_TASK), 1, OperatorSettings())
    pod = job["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    assert pod["automountServiceAccountToken"] is False


def test_chart_values_reach_the_runner_pods(chart: Any) -> None:
    objects = render(chart, MODES["runner-settings"])
    settings = OperatorSettings.from_env(operator_env(objects))
    job = build_job(TaskView.from_body(SAMPLE_TASK), 1, settings)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "evil.example.com/miner:1", "allowImageOverride: true lets the task choose"
    assert container["command"] == ["python", "-m", "limetask_runner"]
    assert {"name": "LIMETASK_IMPORTS", "value": "acme_solution.tasks.lime"} in container["env"]
    # The task's own limits override the platform's defaults key by key.
    assert container["resources"] == {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
    assert pod["nodeSelector"] == {"pool": "tasks"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "tasks", "effect": "NoSchedule"}]
    assert pod["imagePullSecrets"] == [{"name": "acme-registry"}]
    assert pod["serviceAccountName"] == "acme-runner"
    assert pod["securityContext"]["runAsUser"] == 20000
    assert job["spec"]["ttlSecondsAfterFinished"] == 7200
    assert settings.max_attempts_ceiling == 5 and settings.delete_finished_jobs is False
    assert settings.workers == 8
    # By default the platform decides the image, whatever the task asks for.
    default = OperatorSettings.from_env(operator_env(render(chart)))
    container = build_job(TaskView.from_body(SAMPLE_TASK), 1, default)["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/limetask/runner:0.1.0"


def test_every_operator_setting_is_a_chart_value(chart: Any) -> None:
    """A setting the chart cannot set is a setting nobody can set in a cluster."""
    env = {e["name"] for mode in ("runner-settings", "broker-from-values", "archive-from-values")
           for e in operator_container(render(chart, MODES[mode]))["env"]}
    chart_settings = {name for name in env if name.startswith("LIMETASK_")} - {"LIMETASK_EXTRA"}
    fields = {f"LIMETASK_{name.upper()}" for name in OperatorSettings.model_fields}
    assert fields - NOT_FROM_CHART <= chart_settings, \
        f"settings without a chart value: {sorted(fields - NOT_FROM_CHART - chart_settings)}"
    assert chart_settings <= fields, f"settings the operator does not know: {sorted(chart_settings - fields)}"


def test_operator_health_and_shutdown(chart: Any) -> None:
    for mode, port, metrics in (("default", 8080, 9090), ("runner-settings", 8081, 9091)):
        objects = render(chart, MODES[mode])
        deployment = operator_deployment(objects)
        pod = deployment["spec"]["template"]["spec"]
        container = operator_container(objects)
        assert f"--liveness=http://0.0.0.0:{port}/healthz" in container["args"]
        assert container["ports"] == [{"name": "health", "containerPort": port, "protocol": "TCP"},
                                      {"name": "metrics", "containerPort": metrics, "protocol": "TCP"}]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
        assert pod["terminationGracePeriodSeconds"] == (30 if mode == "default" else 45)
        # kopf runs standalone: never two operators at once, not even during a rollout.
        assert deployment["spec"]["replicas"] == 1
        # Leader election: a new pod waits for the Lease, so a rollout may start it first.
        assert deployment["spec"]["strategy"] == {"type": "RollingUpdate",
                                                  "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
        assert operator_env(objects)["LIMETASK_LEADER_ELECTION"] == "true"
        assert pod["automountServiceAccountToken"] is True
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    no_metrics = operator_container(render(chart, {"operator": {"metricsPort": 0}}))
    assert [p["name"] for p in no_metrics["ports"]] == ["health"]
    with pytest.raises(helm.HelmRenderError, match="healthPort and operator.metricsPort must differ"):
        render(chart, {"operator": {"healthPort": 9090}})
    digest = operator_container(render(chart, MODES["runner-settings"]))["image"]
    assert digest == "ghcr.io/limetask/operator@sha256:" + "a" * 64


def test_dockerfiles() -> None:
    """The Dockerfiles' essentials as text (they are built for real by devtools/images and run
    on the local node: tests/test_e2e_incluster.py). The base is a build argument whose default
    is the public Python image; each image installs its set of the lock (requirements/, the
    versions this suite runs with, checked against the lock and the venv by tests/test_lock.py),
    hashed and without resolving, and no version is pinned anywhere else."""
    for path, lockset in ((REPO / "operator" / "Dockerfile", "operator.txt"),
                          (REPO / "runner" / "Dockerfile", "runner.txt")):
        text = path.read_text()
        froms = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
        assert froms and all(f == "${BASE_IMAGE}" for f in froms), (path, froms)
        base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.MULTILINE)
        assert base and re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base.group(1)), (path, base)
        assert re.search(r"^USER 10001:10001$", text, re.MULTILINE), path
        assert "--only-binary=:all:" in text, path
        assert not re.search(r"apt-get|build-essential|gcc", text), path
        assert f"--require-hashes --no-deps -r /requirements/{lockset}" in text, path
        assert "--require-hashes --no-deps -r requirements/build.txt" in text, path
        assert "--no-build-isolation" in text and "pip check" in text, path
        assert not re.findall(r"\b[a-z0-9-]+==[0-9]", text), f"{path}: a version pinned outside the lock"
    solution = (REPO / "examples" / "acme_solution" / "Dockerfile").read_text()
    assert "FROM ${RUNNER_IMAGE}" in solution and "ghcr.io/limetask/runner:" in solution
    assert re.search(r"^USER 10001:10001$", solution, re.MULTILINE)
    assert "-r /usr/local/share/limetask/requirements/build.txt" in solution


# --------------------------------------------------------------------------------------------
# Disruption budgets, network policies and the metrics Service
# --------------------------------------------------------------------------------------------

WEB_ON = {"enabled": True, "imports": ["acme_solution.tasks.lime"], "tokens": {"existingSecret": "acme-web-tokens"}}


def budgets(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The PodDisruptionBudgets, by component."""
    return {component(o): o for o in of_kind(objects, "PodDisruptionBudget")}


def test_disruption_budgets_come_with_two_replicas(chart: Any) -> None:
    """Two replicas or more: a drain evicts one pod of a component at a time (never the leader and
    its standby together). One replica: none, since a drain must evict that pod anyway."""
    assert budgets(render(chart)) == {}
    assert budgets(render(chart, {"web": {**WEB_ON, "replicas": 1}})) == {}
    objects = render(chart, {"operator": {"replicas": 2}, "web": {**WEB_ON, "replicas": 3}})
    found = budgets(objects)
    assert found.keys() == {"operator", "web"}
    for name, deployment in (("operator", operator_deployment(objects)), ("web", web_deployment(objects))):
        spec = found[name]["spec"]
        assert spec == {"maxUnavailable": 1, "unhealthyPodEvictionPolicy": "AlwaysAllow",
                        "selector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}}, name
        assert found[name]["metadata"]["name"] == deployment["metadata"]["name"]
        assert found[name]["metadata"]["namespace"] == RELEASE_NAMESPACE
    # The operator's budget selects no endpoint pod, and the other way round.
    web_pod = web_deployment(objects)["spec"]["template"]["metadata"]["labels"]
    assert not found["operator"]["spec"]["selector"]["matchLabels"].items() <= web_pod.items()
    # Each can be turned off.
    off = render(chart, {"operator": {"replicas": 2, "podDisruptionBudget": {"enabled": False}},
                         "web": {**WEB_ON, "replicas": 2, "podDisruptionBudget": {"enabled": False}}})
    assert budgets(off) == {}
    assert budgets(render(chart, {"operator": {"replicas": 2}})).keys() == {"operator"}
    # No endpoint, no budget for it, whatever its replicas say.
    assert budgets(render(chart, {"web": {"replicas": 2}})) == {}


def test_metrics_service_selects_the_operator_pods(chart: Any) -> None:
    objects = render(chart, MODES["web-existing-secret"])
    service = one(of_component(objects, "Service", "operator"), "Service")
    assert service["metadata"]["name"] == "lt-limetask-metrics"
    assert service["spec"]["selector"] == operator_deployment(objects)["spec"]["selector"]["matchLabels"]
    web_pod = web_deployment(objects)["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= web_pod.items()
    ports = {p["name"]: p["containerPort"] for p in operator_container(objects)["ports"]}
    assert service["spec"]["ports"] == [{"name": "metrics", "port": ports["metrics"], "targetPort": "metrics",
                                         "protocol": "TCP"}]
    assert one(of_component(render(chart, MODES["runner-settings"]), "Service", "operator"), "Service")[
        "spec"]["ports"][0]["port"] == 9091
    # No metrics port, no Service.
    assert of_component(render(chart, {"operator": {"metricsPort": 0}}), "Service", "operator") == []


def test_service_monitor_scrapes_the_metrics_service(chart: Any) -> None:
    assert of_kind(render(chart), "ServiceMonitor") == []
    objects = render(chart, MODES["web-complete"])
    monitors = {m["metadata"]["name"]: m for m in of_kind(objects, "ServiceMonitor")}
    assert set(monitors) == {"lt-limetask", "lt-limetask-web"}  # the operator's, and the endpoint's
    monitor = monitors["lt-limetask"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    spec = monitor["spec"]
    # It picks the metrics Service, and no other Service of the release.
    services = of_kind(objects, "Service")
    picked = [s["metadata"]["name"] for s in services
              if spec["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    assert picked == ["lt-limetask-metrics"]
    assert spec["namespaceSelector"] == {"matchNames": [RELEASE_NAMESPACE]}
    metrics_service = next(s for s in services if s["metadata"]["name"] == "lt-limetask-metrics")
    assert spec["endpoints"] == [{"port": "metrics", "path": "/metrics", "scheme": "http", "interval": "1m",
                                  "scrapeTimeout": "20s"}]
    assert "metrics" in {p["name"] for p in metrics_service["spec"]["ports"]}
    # The endpoint's picks the endpoint's Service only.
    web = monitors["lt-limetask-web"]["spec"]
    assert [s["metadata"]["name"] for s in services
            if web["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()] == ["lt-limetask-web"]
    # Defaults.
    default = one(render(chart, {"metrics": {"serviceMonitor": {"enabled": True}}}), "ServiceMonitor")
    assert default["spec"]["endpoints"][0]["interval"] == "30s"
    assert default["spec"]["endpoints"][0]["scrapeTimeout"] == "10s"


@pytest.mark.parametrize("values, message", [
    ({"metrics": {"serviceMonitor": {"enabled": True}}, "operator": {"metricsPort": 0}},
     "metrics.serviceMonitor.enabled needs operator.metricsPort"),
    ({"metrics": {"serviceMonitor": {"enabled": True, "interval": "30s", "scrapeTimeout": "1m"}}},
     "metrics.serviceMonitor.scrapeTimeout (1m) must not be longer than metrics.serviceMonitor.interval (30s)"),
    ({"metrics": {"serviceMonitor": {"enabled": True, "interval": "1m30s", "scrapeTimeout": "1m31s"}}},
     "scrapeTimeout (1m31s) must not be longer"),
    ({"web": {"ingress": {"enabled": True, "hosts": [{"host": "tasks.example.com"}]}}},
     "web.ingress.enabled needs web.enabled"),
    ({"web": {**WEB_ON, "ingress": {"enabled": True}}}, "web.ingress.hosts is required"),
])
def test_monitoring_and_ingress_refuse_what_cannot_work(chart: Any, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError) as error:
        render(chart, values)
    assert message in str(error.value)


def test_scrape_timeout_may_equal_the_interval(chart: Any) -> None:
    values = {"metrics": {"serviceMonitor": {"enabled": True, "interval": "1m30s", "scrapeTimeout": "90s"}}}
    assert one(render(chart, values), "ServiceMonitor")["spec"]["endpoints"][0]["scrapeTimeout"] == "90s"


def policies(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The NetworkPolicies, by component."""
    return {component(o): o for o in of_kind(objects, "NetworkPolicy")}


def egress_ports(policy: dict[str, Any]) -> list[tuple[tuple[tuple[str, Any], ...], list[Any] | None]]:
    """Each egress rule as (its (protocol, port) pairs, its destinations or None for any)."""
    return [(tuple((p.get("protocol", "TCP"), p["port"]) for p in rule.get("ports", [])), rule.get("to"))
            for rule in policy["spec"]["egress"]]


KUBE_DNS = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
             "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
DNS_PORTS = (("UDP", 53), ("TCP", 53))
API_PORTS = (("TCP", 443), ("TCP", 6443))


def test_no_network_policy_by_default(chart: Any) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["networkPolicy"]["enabled"] is False
    assert of_kind(render(chart, {"web": WEB_ON, "broker": {"url": "amqp://rabbitmq"}}), "NetworkPolicy") == []


def test_network_policies_with_their_defaults(chart: Any) -> None:
    """Each pod accepts its own port from anywhere, and reaches the API server (any address on
    its ports), the cluster DNS, and only what it is configured with."""
    objects = render(chart, {"networkPolicy": {"enabled": True}, "web": WEB_ON})
    found = policies(objects)
    assert found.keys() == {"operator", "web"}
    operator, web = found["operator"]["spec"], found["web"]["spec"]
    assert operator["podSelector"] == {"matchLabels": operator_deployment(objects)["spec"]["selector"]["matchLabels"]}
    assert web["podSelector"] == {"matchLabels": web_deployment(objects)["spec"]["selector"]["matchLabels"]}
    for spec in (operator, web):
        assert spec["policyTypes"] == ["Ingress", "Egress"]
    # Ingress: the metrics port (a port the container names), and the endpoint's HTTP port; from
    # anywhere. Not the health port: the kubelet's probes come from the node, always allowed.
    assert operator["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}]}]
    assert "metrics" in {p["name"] for p in operator_container(objects)["ports"]}
    assert web["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    assert "http" in {p["name"] for p in web_container(objects)["ports"]}
    # Egress: no broker and no archive configured, so neither is reachable.
    assert egress_ports(found["operator"]) == [(API_PORTS, None), (DNS_PORTS, KUBE_DNS)]
    assert egress_ports(found["web"]) == [(API_PORTS, None), (DNS_PORTS, KUBE_DNS)]
    # No endpoint, no policy for it; no metrics port, no ingress at all.
    no_metrics = policies(render(chart, {"networkPolicy": {"enabled": True}, "operator": {"metricsPort": 0}}))
    assert no_metrics.keys() == {"operator"}
    assert no_metrics["operator"]["spec"]["ingress"] == []


def test_network_policies_follow_the_broker_and_the_archive(chart: Any) -> None:
    on = {"networkPolicy": {"enabled": True}, "web": WEB_ON}
    broker = policies(render(chart, {**on, "broker": {"url": "amqp://rabbitmq"}}))
    assert egress_ports(broker["operator"])[2:] == [((("TCP", 5672), ("TCP", 5671)), None)]
    assert len(egress_ports(broker["web"])) == 2, "the endpoint never talks to the broker"
    archive = policies(render(chart, {**on, "archive": {"existingSecret": {"name": "postgres-archive"}}}))
    assert egress_ports(archive["operator"])[2:] == [((("TCP", 5432),), None)]
    assert egress_ports(archive["web"])[2:] == [((("TCP", 5432),), None)], "the endpoint reads the archive"


def test_network_policy_values_reach_the_policies(chart: Any) -> None:
    values = MODES["web-complete"]["networkPolicy"]
    found = policies(render(chart, MODES["web-complete"]))
    operator, web = found["operator"], found["web"]
    assert operator["spec"]["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}],
                                            "from": values["metricsFrom"]}]
    # Prometheus (metricsFrom) scrapes the endpoint's /metrics on its HTTP port too.
    assert MODES["web-complete"]["metrics"]["serviceMonitor"]["enabled"]
    assert web["spec"]["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}], "from": values["webFrom"]},
                                      {"ports": [{"port": "http", "protocol": "TCP"}], "from": values["metricsFrom"]}]
    unscraped = {**MODES["web-complete"], "metrics": {"serviceMonitor": {"enabled": False}}}
    assert policies(render(chart, unscraped))["web"]["spec"]["ingress"] == [
        {"ports": [{"port": "http", "protocol": "TCP"}], "from": values["webFrom"]}]
    api = [{"ipBlock": {"cidr": "10.96.0.1/32"}}, {"ipBlock": {"cidr": "192.168.10.5/32"}}]
    extra = (((("TCP", 3128),), [{"ipBlock": {"cidr": "10.30.0.8/32"}}]))
    assert egress_ports(operator) == [
        (API_PORTS, api), (DNS_PORTS, values["dns"]["to"]), ((("TCP", 5433),), values["archive"]["to"]),
        ((("TCP", 5671),), values["broker"]["to"]), extra]
    assert egress_ports(web) == [
        (API_PORTS, api), (DNS_PORTS, values["dns"]["to"]), ((("TCP", 5433),), values["archive"]["to"]), extra]


def test_ingress_routes_to_the_endpoint(chart: Any) -> None:
    assert of_kind(render(chart, MODES["web-token-values"]), "Ingress") == []
    objects = render(chart, MODES["web-complete"])
    ingress = one(objects, "Ingress")
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    assert ingress["metadata"]["name"] == "lt-limetask-web"
    assert ingress["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt"}
    service = one(of_component(objects, "Service", "web"), "Service")
    backend = {"service": {"name": service["metadata"]["name"], "port": {"name": "http"}}}
    assert "http" in {p["name"] for p in service["spec"]["ports"]}
    assert ingress["spec"] == {
        "ingressClassName": "nginx",
        "tls": [{"secretName": "tasks-example-com-tls", "hosts": ["tasks.example.com", "api.example.com"]}],
        "rules": [
            {"host": "tasks.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}},
            {"host": "api.example.com", "http": {"paths": [
                {"path": "/v1", "pathType": "Prefix", "backend": backend},
                {"path": "/healthz", "pathType": "Exact", "backend": backend}]}}]}
    assert "https://tasks.example.com/, https://api.example.com/ through the Ingress" in \
        notes(chart, MODES["web-complete"])
    # The least: a host; no class (the cluster's default), no TLS, no annotations.
    least = one(render(chart, {"web": {**WEB_ON, "ingress": {"enabled": True, "hosts": [{"host": "tasks.local"}]}}}),
                "Ingress")
    assert "annotations" not in least["metadata"]
    assert least["spec"] == {"rules": [{"host": "tasks.local", "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": backend}]}}]}
    assert "http://tasks.local/ through the Ingress" in notes(
        chart, {"web": {**WEB_ON, "ingress": {"enabled": True, "hosts": [{"host": "tasks.local"}]}}})
    assert "through the Ingress" not in notes(chart, {"web": WEB_ON})


# --------------------------------------------------------------------------------------------
# The HTTP endpoint (web.*)
# --------------------------------------------------------------------------------------------

def web_objects(objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((o["kind"], o["metadata"]["name"]) for o in objects if component(o) == "web")


def test_web_is_off_by_default(chart: Any) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["web"]["enabled"] is False
    assert web_objects(render(chart)) == []
    assert "HTTP endpoint" not in notes(chart)
    # Off, its checks do not apply: empty imports and tokens are fine.
    both = {"existingSecret": "x", "values": {"a": "b"}}
    assert web_objects(render(chart, {"web": {"imports": [], "tokens": both}})) == []


def test_web_objects(chart: Any) -> None:
    name = "lt-limetask-web"
    assert web_objects(render(chart, MODES["web-token-values"])) == [
        ("ClusterRoleBinding", WEB_AUTH_BINDING), ("Deployment", name), ("Role", name), ("RoleBinding", name),
        ("Secret", "lt-limetask-web-tokens"), ("Service", name), ("ServiceAccount", name)]
    # An existing Secret: the chart makes none. Three replicas: a PodDisruptionBudget.
    assert web_objects(render(chart, MODES["web-existing-secret"])) == [
        ("ClusterRoleBinding", WEB_AUTH_BINDING), ("Deployment", name), ("PodDisruptionBudget", name), ("Role", name),
        ("RoleBinding", name), ("Service", name), ("ServiceAccount", name)]
    objects = render(chart, MODES["web-token-values"])
    for o in objects:
        if component(o) == "web" and o["kind"] != "ClusterRoleBinding":  # cluster-scoped: system:auth-delegator
            assert o["metadata"]["namespace"] == RELEASE_NAMESPACE, o["metadata"]
    # Its own ServiceAccount, not the operator's; only its pod mounts the token.
    sa = one(of_component(objects, "ServiceAccount", "web"), "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    pod = web_deployment(objects)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == name != operator_deployment(objects)["spec"]["template"]["spec"]["serviceAccountName"]  # noqa: E501
    assert pod["automountServiceAccountToken"] is True
    assert pod["enableServiceLinks"] is False
    # The operator's objects are the same as without the endpoint.
    without = [o for o in objects if component(o) != "web"]
    assert without == render(chart)


def test_web_deployment_defaults(chart: Any) -> None:
    objects = render(chart, MODES["web-token-values"])
    deployment = web_deployment(objects)
    pod = deployment["spec"]["template"]["spec"]
    container = web_container(objects)
    assert deployment["spec"]["replicas"] == 1
    # The runner image by default: it has the solution's tasks.
    assert container["image"] == "ghcr.io/limetask/runner:0.1.0"
    assert container["imagePullPolicy"] == "IfNotPresent"
    runner = {"runner": {"image": {"repository": "registry.example.com/acme/runner", "tag": "2.3.4"}}}
    assert web_container(render(chart, {**MODES["web-token-values"], **runner}))["image"] == \
        "registry.example.com/acme/runner:2.3.4"
    digest = {"web": {**MODES["web-token-values"]["web"], "image": {"digest": "sha256:" + "b" * 64}}}
    assert web_container(render(chart, {**digest, **runner}))["image"] == \
        "registry.example.com/acme/runner@sha256:" + "b" * 64
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    # Liveness and startup: the process answers (on its event loop, whatever its workers wait for);
    # readiness: /readyz, which says what is degraded but stays 200 (a dependency every replica
    # shares down takes none of them out of the Service).
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    # The tokens: the Secret mounted read-only as a directory, named by LIMETASK_WEB_TOKENS_FILE.
    env = {e["name"]: e["value"] for e in container["env"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["tokens"] == {"name": "tokens", "mountPath": env["LIMETASK_WEB_TOKENS_FILE"], "readOnly": True}
    assert volumes["tokens"]["secret"] == {"secretName": "lt-limetask-web-tokens", "defaultMode": 0o440}
    assert mounts["tmp"]["mountPath"] == "/tmp" and "emptyDir" in volumes["tmp"]
    assert env["LIMETASK_NAMESPACE"] == RELEASE_NAMESPACE
    # The user of the runner image (the same image).
    assert pod["securityContext"]["runAsUser"] == container["securityContext"]["runAsUser"] == 10001
    other_user = render(chart, {**MODES["web-token-values"], "runner": {"userId": 20000}})
    assert web_container(other_user)["securityContext"]["runAsUser"] == 20000


def test_web_values_reach_the_deployment(chart: Any) -> None:
    objects = render(chart, MODES["web-existing-secret"])
    deployment = web_deployment(objects)
    pod = deployment["spec"]["template"]["spec"]
    container = web_container(objects)
    assert deployment["spec"]["replicas"] == 3
    assert container["image"] == "registry.example.com/acme/web:2.3.4"
    assert container["imagePullPolicy"] == "Always"
    assert pod["imagePullSecrets"] == [{"name": "acme-registry"}]
    assert container["ports"] == [{"name": "http", "containerPort": 8081, "protocol": "TCP"}]
    assert container["resources"] == {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"memory": "256Mi"}}
    assert pod["nodeSelector"] == {"pool": "web"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"}]
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {"example.com/team": "platform"}
    assert {v["name"]: v for v in pod["volumes"]}["tokens"]["secret"]["secretName"] == "acme-web-tokens"
    service = one(of_component(objects, "Service", "web"), "Service")
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["ports"] == [{"name": "http", "port": 443, "targetPort": "http", "protocol": "TCP"}]


@pytest.mark.parametrize("mode", WEB_MODES)
def test_web_command_is_the_clis(chart: Any, mode: str) -> None:
    """The container runs `limetask web` with options the real command line accepts."""
    import tomllib

    import typer

    from lime_task.cli.app import app

    container = web_container(render(chart, MODES[mode]))
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert container["command"][0] in scripts
    command = typer.main.get_command(app)
    words = [*container["command"][1:], *container["args"]]
    assert words[0] == "web"
    web = command.commands["web"]  # type: ignore[attr-defined]
    with web.make_context("web", list(words[1:])) as ctx:
        params = ctx.params
    assert params["host"] == "0.0.0.0"
    assert params["port"] == MODES[mode]["web"].get("port", 8000)
    assert params["imports"] == ",".join(MODES[mode]["web"]["imports"])


def test_web_environment_is_what_lime_task_reads(chart: Any) -> None:
    from lime_task import archive, tokens
    from lime_task.server import auth
    from lime_task.server.limits import Limits

    limits = set(Limits.ENV.values())
    env = {e["name"] for e in web_container(render(chart, MODES["web-token-values"]))["env"]}
    limetask = {n for n in env if n.startswith("LIMETASK_")}
    assert limetask == {tokens.TOKENS_FILE_ENV, "LIMETASK_NAMESPACE", auth.AUDIENCE_ENV, auth.REVIEWS_PER_SECOND_ENV,
                        *limits}
    assert 'os.environ.get("LIMETASK_NAMESPACE")' in (REPO / "lime_task" / "client.py").read_text()
    # With the archive, and with Kubernetes tokens turned off.
    values = {**MODES["archive-from-values"], "web": {**MODES["web-token-values"]["web"], "kubernetesAuth": False}}
    env = {e["name"] for e in web_container(render(chart, values))["env"]}
    timeouts = {"LIMETASK_ARCHIVE_RESULTS_TIMEOUT_SECONDS", "LIMETASK_ARCHIVE_DASHBOARD_TIMEOUT_SECONDS"}
    assert timeouts <= set(archive.ReadLimits.ENV)
    assert {n for n in env if n.startswith("LIMETASK_")} == \
        {tokens.TOKENS_FILE_ENV, "LIMETASK_NAMESPACE", archive.URL_ENV, auth.KUBERNETES_AUTH_ENV, *timeouts, *limits}


def test_web_tokens_secret_is_what_the_endpoint_reads(chart: Any, tmp_path: Path) -> None:
    """The chart's Secret, mounted as a Secret volume is (one file per key, next to the kubelet's
    dot entries), gives the endpoint exactly the tokens of the values."""
    from lime_task.tokens import TokenStore

    tokens = MODES["web-token-values"]["web"]["tokens"]["values"]
    secret = one(of_component(render(chart, MODES["web-token-values"]), "Secret", "web"), "Secret")
    assert secret["type"] == "Opaque"
    data = tmp_path / "..2024_05_01_10_00_00.000000001"
    data.mkdir()
    for key, value in secret["stringData"].items():
        (data / key).write_text(value)
        (tmp_path / key).symlink_to(Path("..data") / key)
    (tmp_path / "..data").symlink_to(data.name)
    store = TokenStore.from_env({"LIMETASK_WEB_TOKENS_FILE": str(tmp_path)})
    assert store.apps() == sorted(tokens)
    assert all(store.check(app, token) for app, token in tokens.items())
    # The tokens stay out of the Deployment.
    assert "s3cret-token" not in json.dumps(web_deployment(render(chart, MODES["web-token-values"])))


def test_the_dashboards_platform_tokens_are_mounted_where_the_endpoint_reads_them(chart: Any) -> None:
    """web.platformTokensSecret: mounted read-only as a directory named by the variable the
    dashboard reads; without it, neither the variable nor the volume."""
    from lime_task.server.auth import PLATFORM_TOKENS_FILE_ENV

    objects = render(chart, MODES["web-existing-secret"])
    container = web_container(objects)
    pod = web_deployment(objects)["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["platform-tokens"] == {"name": "platform-tokens", "mountPath": env[PLATFORM_TOKENS_FILE_ENV],
                                         "readOnly": True}
    assert volumes["platform-tokens"]["secret"] == {"secretName": "acme-platform-tokens", "defaultMode": 0o440}
    plain = render(chart, MODES["web-token-values"])
    assert PLATFORM_TOKENS_FILE_ENV not in {e["name"] for e in web_container(plain)["env"]}
    assert "platform-tokens" not in {v["name"] for v in web_deployment(plain)["spec"]["template"]["spec"]["volumes"]}
    text = notes(chart, MODES["web-existing-secret"])
    assert "/dashboard/" in text and "acme-platform-tokens" in text


@pytest.mark.parametrize("mode", ["archive-existing-secret", "archive-from-values"])
def test_web_reads_the_archive(chart: Any, mode: str) -> None:
    """With the archive, the endpoint gets its URL from the operator's Secret and key, and
    restarts with the operator when it changes."""
    objects = render(chart, {**MODES[mode], **MODES["web-token-values"]})
    operator_ref = archive_url_ref(operator_container(objects))
    assert operator_ref is not None and archive_url_ref(web_container(objects)) == operator_ref
    annotations = web_deployment(objects)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/archive"] == \
        operator_deployment(objects)["spec"]["template"]["metadata"]["annotations"]["checksum/archive"]
    assert "secret@postgres" not in json.dumps(web_deployment(objects))
    # podAnnotations stay next to the checksum.
    web = {**MODES["web-token-values"]["web"], "podAnnotations": {"example.com/team": "platform"}}
    annotations = web_deployment(render(chart, {**MODES[mode], "web": web}))["spec"]["template"]["metadata"][
        "annotations"]
    assert annotations.keys() == {"checksum/archive", "example.com/team"}
    # Without the archive: no URL, and no checksum.
    objects = render(chart, MODES["web-token-values"])
    assert archive_url_ref(web_container(objects)) is None
    assert "annotations" not in web_deployment(objects)["spec"]["template"]["metadata"]


def test_web_kubernetes_auth(chart: Any) -> None:
    """On by default: the endpoint's ServiceAccount is bound to system:auth-delegator (TokenReview
    and SubjectAccessReview); off, no binding, and the endpoint is told."""
    from lime_task.server import auth

    objects = render(chart, MODES["web-token-values"])
    binding = one(of_component(objects, "ClusterRoleBinding", "web"), "ClusterRoleBinding")
    assert binding["metadata"]["name"] == WEB_AUTH_BINDING
    assert "namespace" not in binding["metadata"]
    assert binding["roleRef"] == AUTH_DELEGATOR
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "lt-limetask-web",
                                    "namespace": RELEASE_NAMESPACE}]
    env = {e["name"]: e.get("value") for e in web_container(objects)["env"]}
    assert auth.KUBERNETES_AUTH_ENV not in env
    # Tokens bound to the endpoint's own audience only, and a bounded rate of TokenReviews.
    assert auth.kubernetes_auth_settings(env) == ("limetask-web", 10.0)
    tuned = {"web": {**MODES["web-token-values"]["web"], "kubernetesAuthAudience": "tasks.example.com",
                     "tokenReviewsPerSecond": 2.5}}
    assert auth.kubernetes_auth_settings({e["name"]: e.get("value") for e in web_container(render(chart, tuned))[
        "env"]}) == ("tasks.example.com", 2.5)
    for bad in ({"kubernetesAuthAudience": ""}, {"kubernetesAuthAudience": "two words"},
                {"tokenReviewsPerSecond": 0}, {"tokenReviewsPerSecond": "10"}):
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema({"web": {**MODES["web-token-values"]["web"], **bad}})
    assert yaml.safe_load((CHART / "values.yaml").read_text())["web"]["kubernetesAuth"] is True

    off = render(chart, {"web": {**MODES["web-token-values"]["web"], "kubernetesAuth": False}})
    assert of_kind(off, "ClusterRoleBinding") == of_component(off, "ClusterRoleBinding", "operator")
    assert AUTH_DELEGATOR not in [b["roleRef"] for b in of_kind(off, "ClusterRoleBinding")]
    env = {e["name"]: e.get("value") for e in web_container(off)["env"]}
    assert env[auth.KUBERNETES_AUTH_ENV] == "false"
    assert auth.AUDIENCE_ENV not in env and auth.REVIEWS_PER_SECOND_ENV not in env
    # The operator never gets it, web or not.
    assert not [b for b in of_kind(render(chart), "ClusterRoleBinding") if b["roleRef"] == AUTH_DELEGATOR]


@pytest.mark.parametrize("web, message", [
    ({"enabled": True, "tokens": {"values": {"acme-crm": "t"}}}, "web.imports is required when web.enabled is true"),
    ({"enabled": True, "imports": ["acme_solution.tasks.lime"]}, "web.tokens is required when web.enabled is true"),
    ({"enabled": True, "imports": ["acme_solution.tasks.lime"], "tokens": {"values": {}}},
     "web.tokens is required when web.enabled is true"),
    ({"enabled": True, "imports": ["acme_solution.tasks.lime"],
      "tokens": {"existingSecret": "acme-web-tokens", "values": {"acme-crm": "t"}}},
     "set either web.tokens.existingSecret or web.tokens.values, not both"),
    ({"enabled": True, "imports": ["acme_solution.tasks.lime"],
      "tokens": {"values": {"acme-crm": "same", "acme-erp": "same", "acme-web": "other"}}},
     "web.tokens.values: acme-crm and acme-erp have the same token: give each application its own"),
])
def test_web_needs_imports_and_exactly_one_token_source(chart: Any, web: dict[str, Any], message: str) -> None:
    chart.validate_schema({"web": web})  # each value is valid alone: the template says what is missing
    # An install renders, and fails, the same way (`helm lint` lets `fail` pass: it only logs it).
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(chart, {"web": web})


@pytest.mark.parametrize("mode", WEB_MODES)
def test_web_service_selects_the_web_pods(chart: Any, mode: str) -> None:
    objects = render(chart, MODES[mode])
    service = one(of_component(objects, "Service", "web"), "Service")
    selector = service["spec"]["selector"]
    web_pod_labels = web_deployment(objects)["spec"]["template"]["metadata"]["labels"]
    operator_pod_labels = operator_deployment(objects)["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= web_pod_labels.items()
    assert not selector.items() <= operator_pod_labels.items(), "the Service must not reach the operator"
    assert web_deployment(objects)["spec"]["selector"]["matchLabels"] == selector
    assert not operator_deployment(objects)["spec"]["selector"]["matchLabels"].items() <= web_pod_labels.items(), \
        "the operator's Deployment must not adopt the web pods"
    ports = {p["name"] for p in web_container(objects)["ports"]}
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"] and "http" in ports
    assert service["spec"]["type"] == MODES[mode]["web"].get("service", {}).get("type", "ClusterIP")


@pytest.mark.parametrize("mode", WEB_MODES)
def test_web_tasks_land_where_the_operator_watches(chart: Any, mode: str) -> None:
    """The endpoint creates LimeTasks in the release namespace: the operator watches it by default."""
    objects = render(chart, MODES[mode])
    namespace = {e["name"]: e.get("value") for e in web_container(objects)["env"]}["LIMETASK_NAMESPACE"]
    assert namespace == RELEASE_NAMESPACE
    assert f"--namespace={namespace}" in operator_container(objects)["args"]
    assert "WARNING" not in notes(chart, MODES[mode])
    assert "WARNING" not in notes(chart, {**MODES[mode], "watch": {"scope": "cluster"}})
    elsewhere = notes(chart, {**MODES[mode], "watch": {"namespaces": ["team-a"]}})
    assert f"WARNING: this release's operator does not watch namespace {RELEASE_NAMESPACE}" in elsewhere


def test_web_notes_say_how_to_post_a_task(chart: Any) -> None:
    text = notes(chart, MODES["web-token-values"])
    assert "4. The HTTP endpoint" in text
    assert f"kubectl -n {RELEASE_NAMESPACE} port-forward service/lt-limetask-web 8080:80" in text
    assert "get secret lt-limetask-web-tokens -o jsonpath='{.data.acme-crm}'" in text
    assert "curl -sS -X POST http://127.0.0.1:8080/v1/apps/acme-crm/tasks" in text
    assert '-H "Authorization: Bearer $TOKEN"' in text
    assert '"task": "acme_solution.tasks.lime.' in text
    assert "s3cret-token" not in text, "never print a token"
    other = notes(chart, {"web": {**MODES["web-token-values"]["web"], "tokens": {"values": {"acme.crm": "t"}}}})
    assert r"jsonpath='{.data.acme\.crm}'" in other
    existing = notes(chart, MODES["web-existing-secret"])
    assert "get secret acme-web-tokens" in existing and "port-forward service/lt-limetask-web 8080:443" in existing
    # The document, not a page that loads scripts from a CDN (the endpoint serves no /docs).
    assert "http://127.0.0.1:8080/openapi.json" in text and "/docs" not in text


# --------------------------------------------------------------------------------------------
# End to end: a real install into the cluster
# --------------------------------------------------------------------------------------------

def kubectl_json(cluster: Cluster, *args: str, namespace: str | None = None) -> dict[str, Any]:
    return json.loads(cluster.run_kubectl(*args, "-o", "json", namespace=namespace).stdout)  # type: ignore[no-any-return]


def exists(cluster: Cluster, kind: str, name: str, namespace: str | None = None) -> bool:
    result = cluster.run_kubectl("get", kind, name, "--ignore-not-found", "-o", "name", namespace=namespace,
                                 check=False)
    return bool(result.stdout.strip())


def release_objects(cluster: Cluster, release: str, namespace: str) -> list[str]:
    """Everything left in the cluster that belongs to the release."""
    selector = f"app.kubernetes.io/instance={release}"
    left = cluster.run_kubectl("get", "deployments,services,serviceaccounts,secrets,roles,rolebindings", "-l", selector,
                               "-o", "name", namespace=namespace).stdout.split()
    left += cluster.run_kubectl("get", "clusterroles,clusterrolebindings", "-l", selector, "-o", "name").stdout.split()
    # Helm's release records, and the token the ServiceAccount had.
    left += cluster.run_kubectl("get", "secrets", "-l", f"owner=helm,name={release}", "-o", "name",
                                namespace=namespace).stdout.split()
    for secret in kubectl_json(cluster, "get", "secrets", namespace=namespace)["items"]:
        annotations = secret["metadata"].get("annotations") or {}
        if annotations.get("kubernetes.io/service-account.name", "").startswith(release):
            left.append(f"secret/{secret['metadata']['name']}")
    return left


@pytest.fixture
def helm_config(cluster: Cluster, namespace: str) -> Iterator[Any]:
    with helm.Config(kubeconfig_path=cluster.kubeconfig, namespace=namespace) as config:
        yield config


@pytest.fixture
def release(cluster: Cluster, helm_config: Any, namespace: str) -> Iterator[str]:
    """A unique release name, uninstalled after the test if the test left it installed. Its
    cluster-scoped objects go in any case: deleting the namespace would not remove them."""
    name = f"lt-{uuid.uuid4().hex[:6]}"
    yield name
    try:
        helm_config.uninstall(name, ignore_not_found=True, timeout=60)
    finally:
        cluster.run_kubectl("delete", "clusterroles,clusterrolebindings", "-l", f"app.kubernetes.io/instance={name}",
                            "--ignore-not-found", check=False)


@pytest.mark.e2e
@pytest.mark.parametrize("scope", ["namespaces", "cluster"])
def test_install_and_uninstall(cluster: Cluster, crd: None, namespace: str, helm_config: Any, release: str,
                               scope: str) -> None:
    # The shared CRD is in the cluster (other tests use it): this release must neither own nor
    # change it, so it installs with crds.install=false.
    values = {"crds": {"install": False}, "watch": {"scope": scope},
              "broker": {"url": "amqp://lime:secret@rabbitmq:5672/%2F"}}
    installed = helm_config.install(CHART, release, values, namespace=namespace, timeout=120)
    assert installed["status"] == "deployed", installed
    assert "kind: LimeTask" in installed["notes"]
    fullname = f"{release}-limetask"
    cluster_name = f"{namespace}-{fullname}"
    assert exists(cluster, "deployment", fullname, namespace)
    assert exists(cluster, "serviceaccount", fullname, namespace)
    assert exists(cluster, "secret", f"{fullname}-broker", namespace)
    assert exists(cluster, "clusterrole", cluster_name)
    assert exists(cluster, "clusterrolebinding", cluster_name)
    if scope == "namespaces":
        assert exists(cluster, "role", fullname, namespace)
        assert exists(cluster, "rolebinding", fullname, namespace)
    else:
        assert not exists(cluster, "role", fullname, namespace)
        rules = kubectl_json(cluster, "get", "clusterrole", cluster_name)["rules"]
        assert rules_by_resource(rules) == {**CLUSTER_RULES, **WATCHED_NAMESPACE_RULES}
    deployment = kubectl_json(cluster, "get", "deployment", fullname, namespace=namespace)
    assert restricted_violations(deployment["spec"]["template"]["spec"]) == []
    assert [r["name"] for r in helm_config.list()] == [release]

    helm_config.uninstall(release, timeout=120)
    wait_until(lambda: release_objects(cluster, release, namespace) == [], timeout=60,
               message="every object of the release to be gone")
    assert helm_config.list(all_states=True) == []
    assert exists(cluster, "crd", "limetasks.limetask.io"), "the shared CRD must stay"


@pytest.mark.e2e
def test_install_with_the_web_endpoint(cluster: Cluster, crd: None, api_client: Any, namespace: str,
                                       helm_config: Any, release: str, tmp_path: Path) -> None:
    """web.enabled: the endpoint's objects are made, its ServiceAccount can create and read
    LimeTasks in the release namespace and do nothing else, and uninstalling removes it all."""
    from lime_task import TaskClient

    values = {"crds": {"install": False},
              "web": {"enabled": True, "imports": ["acme_solution.tasks.lime"],
                      "tokens": {"values": {"my-app": "s3cret-" + uuid.uuid4().hex}}}}
    installed = helm_config.install(CHART, release, values, namespace=namespace, timeout=120)
    assert installed["status"] == "deployed", installed
    assert "/v1/apps/my-app/tasks" in installed["notes"]
    web = f"{release}-limetask-web"
    for kind in ("deployment", "service", "serviceaccount", "role", "rolebinding"):
        assert exists(cluster, kind, web, namespace), kind
    assert exists(cluster, "secret", f"{web}-tokens", namespace)
    # web.kubernetesAuth (on by default): bound to the built-in system:auth-delegator.
    auth = f"{namespace}-{release}-limetask"[:54].rstrip("-") + "-web-auth"
    assert kubectl_json(cluster, "get", "clusterrolebinding", auth)["roleRef"] == AUTH_DELEGATOR
    assert rules_by_resource(kubectl_json(cluster, "get", "role", web, namespace=namespace)["rules"]) == WEB_RULES
    deployment = kubectl_json(cluster, "get", "deployment", web, namespace=namespace)
    pod = deployment["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    assert pod["serviceAccountName"] == web
    service = kubectl_json(cluster, "get", "service", web, namespace=namespace)
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]

    kubeconfig = kubeconfig_for_token(cluster, service_account_token(api_client, namespace, web),
                                      tmp_path / "web.kubeconfig")

    def can_i(*args: str, ns: str = namespace) -> bool:
        argv = [str(cluster.kubectl), f"--kubeconfig={kubeconfig}", "auth", "can-i", *args, f"--namespace={ns}"]
        return subprocess.run(argv, check=False, text=True, capture_output=True).stdout.strip() == "yes"

    allowed = [(verb, "limetasks.limetask.io") for verb in ("create", "get", "list", "watch", "patch")]
    # Checking Kubernetes bearer tokens, and what their identities may do (web.kubernetesAuth).
    allowed += [("create", "tokenreviews.authentication.k8s.io"),
                ("create", "subjectaccessreviews.authorization.k8s.io")]
    denied = [("delete", "limetasks.limetask.io"), ("deletecollection", "limetasks.limetask.io"),
              ("update", "limetasks.limetask.io"),
              ("update", "limetasks.limetask.io", "--subresource=status"),
              ("patch", "limetasks.limetask.io", "--subresource=status"),
              ("update", "limetasks.limetask.io", "--subresource=finalizers"),
              ("create", "jobs.batch"), ("get", "jobs.batch"), ("list", "jobs.batch"), ("delete", "jobs.batch"),
              ("create", "pods"), ("get", "pods"), ("list", "pods"), ("delete", "pods"),
              ("create", "pods", "--subresource=exec"), ("get", "pods", "--subresource=log"),
              ("get", "secrets"), ("list", "secrets"), ("get", "configmaps"),
              ("create", "serviceaccounts", "--subresource=token"), ("create", "events"),
              ("create", "rolebindings.rbac.authorization.k8s.io"), ("*", "*")]
    assert [a for a in allowed if not can_i(*a)] == []
    assert [d for d in denied if can_i(*d)] == []
    assert not can_i("create", "limetasks.limetask.io", ns="default"), "LimeTasks only in the release namespace"
    assert not can_i("list", "limetasks.limetask.io", "--all-namespaces")
    # The same token through the client the endpoint uses: create and read a task.
    tasks = TaskClient(kubeconfig=kubeconfig, namespace=namespace)
    status = tasks.send("acme_solution.tasks.lime.add", "my-app", [1, 2], check=False)
    assert tasks.get_status(status.id, "my-app").id == status.id
    assert exists(cluster, "limetask", status.id, namespace)

    helm_config.uninstall(release, timeout=120)
    wait_until(lambda: release_objects(cluster, release, namespace) == [], timeout=60,
               message="every object of the release to be gone")
    assert helm_config.list(all_states=True) == []


@pytest.mark.e2e
@pytest.mark.parametrize("keep", [True, False])
def test_crd_is_kept_on_uninstall_only_when_asked(cluster: Cluster, namespace: str, helm_config: Any,
                                                   release: str, tmp_path: Path, keep: bool) -> None:
    """The real CRD is shared by other tests, so this installs a copy of the chart whose CRD is
    the same one in a group of its own."""
    group = f"t{uuid.uuid4().hex[:8]}.limetask.example.com"
    crd_name = f"limetasks.{group}"
    copied = tmp_path / "limetask"
    shutil.copytree(CHART, copied)
    for name in CRD_FILES:
        crd_file = copied / "files" / name
        crd_file.write_text(crd_file.read_text().replace("limetasks.limetask.io", crd_name)
                            .replace("limetaskschedules.limetask.io", f"limetaskschedules.{group}")
                            .replace("limetaskqueues.limetask.io", f"limetaskqueues.{group}")
                            .replace("group: limetask.io", f"group: {group}"))
    try:
        helm_config.install(copied, release, {"crds": {"install": True, "keep": keep}}, namespace=namespace,
                            timeout=120)
        crd = kubectl_json(cluster, "get", "crd", crd_name)
        assert crd["metadata"]["labels"]["app.kubernetes.io/instance"] == release
        assert (crd["metadata"].get("annotations") or {}).get("helm.sh/resource-policy") == ("keep" if keep else None)
        helm_config.uninstall(release, timeout=120)
        wait_until(lambda: release_objects(cluster, release, namespace) == [], timeout=60,
                   message="every object of the release to be gone")
        if keep:
            assert exists(cluster, "crd", crd_name), "crds.keep: the CRD outlives the release"
        else:
            wait_until(lambda: not exists(cluster, "crd", crd_name), timeout=60, message="the CRD to be deleted")
    finally:
        cluster.run_kubectl("delete", "crd", crd_name, f"limetaskschedules.{group}", f"limetaskqueues.{group}",
                            "--ignore-not-found", "--wait=false", check=False)


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.e2e
def test_operator_works_with_the_charts_rbac_and_no_more(cluster: Cluster, crd: None, api_client: Any,
                                                          namespace: str, helm_config: Any, release: str,
                                                          tmp_path: Path) -> None:
    """Run the operator as the chart deploys it (its args, its environment, its ServiceAccount's
    token) and let it carry a task to SUCCESS; the ServiceAccount can do nothing more."""
    from lime_task import SUCCESS, TaskClient

    port, metrics_port = free_ports(2)
    # The operator runs here as a process, not as the Deployment's pod (whose node selector no
    # node matches); tasks run in the example solution's image.
    values = {"crds": {"install": False}, "tasks": {"retentionSeconds": 0},
              "operator": {"healthPort": port, "metricsPort": metrics_port, "verbose": True,
                           "nodeSelector": {"limetask.io/no-such-node": "true"}},
              "runner": {"image": dict(zip(("repository", "tag"), ACME_IMAGE.rsplit(":", 1), strict=True)),
                         "resources": RUNNER_RESOURCES}}
    helm_config.install(CHART, release, values, namespace=namespace, timeout=120)
    fullname = f"{release}-limetask"
    deployment = kubectl_json(cluster, "get", "deployment", fullname, namespace=namespace)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    kubeconfig = kubeconfig_for_token(cluster, service_account_token(api_client, namespace, fullname),
                                      tmp_path / "operator.kubeconfig")

    def can_i(*args: str, ns: str | None = namespace) -> bool:
        argv = [str(cluster.kubectl), f"--kubeconfig={kubeconfig}", "auth", "can-i", *args]
        if ns:
            argv.append(f"--namespace={ns}")
        return subprocess.run(argv, check=False, text=True, capture_output=True).stdout.strip() == "yes"

    allowed = [("get", "limetasks.limetask.io"), ("list", "limetasks.limetask.io"), ("watch", "limetasks.limetask.io"),
               ("update", "limetasks.limetask.io", "--subresource=status"),
               # schedules: runs are created, Replace cancels (patch), history limits delete
               ("create", "limetasks.limetask.io"), ("patch", "limetasks.limetask.io"),
               ("delete", "limetasks.limetask.io"), ("list", "limetaskschedules.limetask.io"),
               ("watch", "limetaskschedules.limetask.io"),
               ("update", "limetaskschedules.limetask.io", "--subresource=status"),
               ("create", "jobs.batch"), ("get", "jobs.batch"), ("list", "jobs.batch"), ("watch", "jobs.batch"),
               ("delete", "jobs.batch"), ("list", "pods"), ("watch", "pods"), ("create", "events"), ("list", "events"),
               ("create", "events.events.k8s.io")]
    denied = [("create", "pods"), ("create", "pods", "--subresource=exec"), ("get", "pods"), ("delete", "pods"),
              ("get", "secrets"), ("list", "secrets"), ("update", "limetasks.limetask.io"),
              ("create", "limetaskschedules.limetask.io"), ("update", "limetaskschedules.limetask.io"),
              ("delete", "limetaskschedules.limetask.io"), ("patch", "jobs.batch"), ("create", "deployments.apps"),
              ("create", "rolebindings.rbac.authorization.k8s.io"), ("create", "serviceaccounts", "--subresource=token"),  # noqa: E501
              ("*", "*")]
    assert [a for a in allowed if not can_i(*a)] == []
    assert [d for d in denied if can_i(*d)] == []
    assert not can_i("create", "jobs.batch", ns="default"), "jobs only where it watches"
    assert not can_i("list", "pods", ns="default")
    assert can_i("list", "customresourcedefinitions.apiextensions.k8s.io", ns=None)
    assert not can_i("get", "customresourcedefinitions.apiextensions.k8s.io", ns=None)
    assert not can_i("delete", "customresourcedefinitions.apiextensions.k8s.io", ns=None)
    assert can_i("list", "namespaces", ns=None) and not can_i("get", "secrets", ns=None)
    # Namespaces' labels (queues' namespaceSelectors), from a watch: read only.
    assert can_i("watch", "namespaces", ns=None) and not can_i("patch", "namespaces", ns=None)
    # LimeTaskQueues (cluster-scoped): read, and their status written, never changed.
    for verb in ("get", "list", "watch"):
        assert can_i(verb, "limetaskqueues.limetask.io", ns=None), verb
    assert can_i("update", "limetaskqueues.limetask.io", "--subresource=status", ns=None)
    for verb in ("create", "update", "patch", "delete"):
        assert not can_i(verb, "limetaskqueues.limetask.io", ns=None), verb

    # A person with the chart's "edit" role (as the default admin and edit roles aggregate it)
    # may create and cancel LimeTasks, but never write their status: only the operator may.
    edit = f"{namespace}-{fullname}-edit"[:58].rstrip("-") + "-edit"
    cluster.run_kubectl("create", "serviceaccount", "someone", namespace=namespace)
    cluster.run_kubectl("create", "rolebinding", "someone-edits", f"--clusterrole={edit}",
                        f"--serviceaccount={namespace}:someone", namespace=namespace)

    def someone_can(*args: str) -> bool:
        answer = cluster.run_kubectl("auth", "can-i", *args, f"--as=system:serviceaccount:{namespace}:someone",
                                     namespace=namespace, check=False)
        return answer.stdout.strip() == "yes"

    assert someone_can("create", "limetasks.limetask.io") and someone_can("patch", "limetasks.limetask.io")
    assert someone_can("create", "limetaskschedules.limetask.io")
    assert not someone_can("update", "limetaskschedules.limetask.io", "--subresource=status")
    assert not someone_can("update", "limetasks.limetask.io", "--subresource=status")
    assert not someone_can("patch", "limetasks.limetask.io", "--subresource=status")

    args = tuple(container["args"])
    assert args[0] == f"--namespace={namespace}"
    op = Operator(cluster, tmp_path, extra_env={**env, "LIMETASK_KUBECONFIG": str(kubeconfig)}, args=args)
    op.start()
    try:
        wait_until(lambda: _http_ok(port, "/healthz"), timeout=30, message="the liveness endpoint to answer")
        tasks = TaskClient(kubeconfig=cluster.kubeconfig, namespace=namespace)
        status = tasks.send("acme_solution.tasks.lime.add", "my-app", [1, 2])
        final = tasks.wait(status.id, "my-app", timeout=90)
        assert final.status == SUCCESS, (final, op.log_tail())
        assert final.result == 3
        # The finished Job is deleted (the delete verb at work).
        wait_until(lambda: not kubectl_json(cluster, "get", "jobs", namespace=namespace)["items"], timeout=30,
                   message="the finished Job to be deleted")
        assert _http_ok(metrics_port, "/metrics"), "the metrics endpoint answers on operator.metricsPort"
        log = op.log_path.read_text(errors="replace")
        # This operator reconciled the task (another one, watching every namespace, may have
        # raced it to each write; a 409 or 404 then, but never a 403).
        assert f"{namespace}/{status.id}" in log, op.log_tail()
        for sign in ("forbidden", ": 403 ", "not enough permissions"):
            assert sign not in log.lower(), f"{sign!r} in the operator log:\n{op.log_tail(80)}"
        # SIGTERM: kopf stops its watches and the operator exits 0, well within the grace period.
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert op.proc is not None
        op.proc.send_signal(signal.SIGTERM)
        assert op.proc.wait(timeout=grace) == 0, op.log_tail()
    finally:
        op.stop()
    helm_config.uninstall(release, timeout=120)
    wait_until(lambda: release_objects(cluster, release, namespace) == [], timeout=60,
               message="every object of the release to be gone")


def _http_ok(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False
