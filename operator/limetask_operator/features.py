"""What the API server offers, found out by asking it, never by its version.

One seam for every server feature the operator uses but can do without. Today:
- `pod_replacement_policy`: the server keeps a Job's `podReplacementPolicy`. Then the Jobs are
  made with `podReplacementPolicy: Failed` (manifests.py): no replacement pod until a deleted or
  evicted one has failed, and with `backoffLimit: 0` none at all. Otherwise the job controller
  may start a replacement, whose Job the derivation stops; the first pod decides the attempt
  (derivation/outcome.py: one pod per attempt).

Detection is a server-side dry run of a Job that asks for the feature: a server that does not
know a field drops it from what it answers, one that knows it keeps it. Nothing is created.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .kube import Kube, KubeError, jobs_path

LOG = logging.getLogger("limetask.operator.features")


@dataclass(frozen=True)
class ServerFeatures:
    pod_replacement_policy: bool = False


NONE = ServerFeatures()  # nothing found (the server refused the dry run, or it was not asked)

def probe_job(namespace: str) -> dict[str, Any]:
    """A Job that asks for every feature detected here (sent as a dry run only)."""
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"generateName": "limetask-feature-probe-", "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            "podReplacementPolicy": "Failed",
            "template": {"spec": {"restartPolicy": "Never",
                                  "containers": [{"name": "probe", "image": "limetask-feature-probe"}]}},
        },
    }


def features_of(answer: dict[str, Any]) -> ServerFeatures:
    """What the server kept of the probe Job."""
    spec = answer.get("spec") or {}
    return ServerFeatures(pod_replacement_policy=spec.get("podReplacementPolicy") == "Failed")


async def detect(kube: Kube, namespace: str) -> ServerFeatures:
    """Ask the server (a dry run in `namespace`, where the operator may create Jobs)."""
    try:
        answer = await kube.request("POST", jobs_path(namespace), probe_job(namespace), params={"dryRun": "All"})
    except KubeError as exc:
        LOG.warning("could not ask the API server which Job features it has (%s): using none", exc)
        return ServerFeatures()
    found = features_of(answer or {})
    LOG.info("API server features: podReplacementPolicy %s", "yes" if found.pod_replacement_policy else "no")
    return found
