"""What devtools/cluster/kueue.py installs: the release's webhooks reduced to those its manager
serves, pointed at the host process; its CRDs with the conversion webhook where the release
has one; and the Configuration that keeps Kueue off every Job without a queue name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kueue
import yaml

URL, CA = "https://127.0.0.1:9999", "Q0E="


def hook(name: str, path: str, group: str, resource: str) -> dict[str, Any]:
    return {"name": name, "admissionReviewVersions": ["v1"], "failurePolicy": "Fail", "sideEffects": "None",
            "clientConfig": {"service": {"name": "webhook-service", "namespace": "system", "path": path}},
            "rules": [{"apiGroups": [group], "apiVersions": ["v1"], "operations": ["CREATE"],
                       "resources": [resource]}]}


def release(tmp_path: Path) -> Path:
    (tmp_path / "config" / "webhook").mkdir(parents=True)
    (tmp_path / "config" / "webhook" / "manifests.yaml").write_text(yaml.safe_dump_all([
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
         "metadata": {"name": "mutating-webhook-configuration"},
         "webhooks": [hook("mjob.kb.io", "/mutate-batch-v1-job", "batch", "jobs"),
                      hook("mpod.kb.io", "/mutate--v1-pod", "", "pods"),
                      hook("mdeployment.kb.io", "/mutate-apps-v1-deployment", "apps", "deployments"),
                      hook("mworkload.kb.io", "/mutate-kueue-x-k8s-io-v1beta2-workload", kueue.GROUP, "workloads")]},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
         "metadata": {"name": "validating-webhook-configuration"},
         "webhooks": [hook("vjob.kb.io", "/validate-batch-v1-job", "batch", "jobs"),
                      hook("vjobset.kb.io", "/validate-jobset-x-k8s-io-v1alpha2-jobset", "jobset.x-k8s.io", "jobsets"),
                      hook("vcohort.kb.io", "/validate-kueue-x-k8s-io-v1beta2-cohort", kueue.GROUP, "cohorts")]},
    ]))
    bases, patches = tmp_path / "config" / "crd" / "bases", tmp_path / "config" / "crd" / "patches"
    bases.mkdir(parents=True)
    patches.mkdir(parents=True)
    for plural in ("workloads", "resourceflavors"):
        (bases / f"kueue.x-k8s.io_{plural}.yaml").write_text(yaml.safe_dump({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.kueue.x-k8s.io"}, "spec": {"group": kueue.GROUP}}))
    (patches / "webhook_in_workloads.yaml").write_text(yaml.safe_dump({
        "metadata": {"name": "workloads.kueue.x-k8s.io"},
        "spec": {"conversion": {"strategy": "Webhook"}}}))
    return tmp_path


def test_only_served_webhooks_are_installed_and_they_call_the_host_process(tmp_path: Path) -> None:
    configs = {c["kind"]: c for c in kueue.webhooks(release(tmp_path), URL, CA)}
    mutating = configs["MutatingWebhookConfiguration"]
    validating = configs["ValidatingWebhookConfiguration"]
    assert mutating["metadata"] == {"name": "kueue-mutating-webhook-configuration"}
    # Pods, Deployments, JobSets: not integrations of this manager, so nothing serves them, and a
    # webhook that fails closed would refuse every such object in the cluster.
    assert [h["name"] for h in mutating["webhooks"]] == ["mjob.kb.io", "mworkload.kb.io"]
    assert [h["name"] for h in validating["webhooks"]] == ["vjob.kb.io", "vcohort.kb.io"]
    for h in mutating["webhooks"] + validating["webhooks"]:
        assert h["clientConfig"]["caBundle"] == CA
        assert h["clientConfig"]["url"].startswith(URL + "/") and "service" not in h["clientConfig"]
    by_name = {h["name"]: h for h in mutating["webhooks"] + validating["webhooks"]}
    assert by_name["mjob.kb.io"]["clientConfig"]["url"] == f"{URL}/mutate-batch-v1-job"
    # Jobs without Kueue's queue label never reach it; Kueue's own resources always do.
    selector = {"matchExpressions": [{"key": "kueue.x-k8s.io/queue-name", "operator": "Exists"}]}
    assert by_name["mjob.kb.io"]["objectSelector"] == selector
    assert by_name["vjob.kb.io"]["objectSelector"] == selector
    assert "objectSelector" not in by_name["mworkload.kb.io"]


def test_crds_convert_through_the_host_process_where_the_release_does(tmp_path: Path) -> None:
    found = {c["metadata"]["name"]: c for c in kueue.crds(release(tmp_path), URL, CA)}
    assert found["workloads.kueue.x-k8s.io"]["spec"]["conversion"] == {"strategy": "Webhook", "webhook": {
        "clientConfig": {"url": f"{URL}/convert", "caBundle": CA}, "conversionReviewVersions": ["v1"]}}
    assert "conversion" not in found["resourceflavors.kueue.x-k8s.io"]["spec"]


def test_the_configuration_leaves_jobs_without_a_queue_name_alone(tmp_path: Path) -> None:
    cfg = kueue.configuration(9999, 9998, tmp_path)
    assert cfg["manageJobsWithoutQueueName"] is False
    assert cfg["integrations"] == {"frameworks": ["batch/job"]}
    assert cfg["waitForPodsReady"]["timeout"] == kueue.WAIT_FOR_PODS_READY["timeout"]
    assert cfg["webhook"] == {"host": "127.0.0.1", "port": 9999, "certDir": str(tmp_path)}
    assert cfg["internalCertManagement"] == {"enable": False}
