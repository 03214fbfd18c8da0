"""The server's Kubernetes manifests: valid against the API schemas (offline), and consistent with the server."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from serve.__main__ import parse_args
from serve.app import OPEN_PATHS, create_app
from serve.config import TOKEN_ENV
from tasks.registry.config import StoreConfig

PROJECT = Path(__file__).resolve().parents[2]
K8S = PROJECT / "infra" / "k8s"
KUBERNETES_VERSION = "1.33.0"


def _documents() -> dict[str, dict]:
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


DOCS = _documents()


@pytest.mark.parametrize("kind", sorted(DOCS))
def test_every_manifest_validates_strictly_against_the_kubernetes_schema(kind: str) -> None:
    kubernetes_validate.validate(DOCS[kind], KUBERNETES_VERSION, strict=True)


def test_the_schema_check_rejects_a_broken_manifest() -> None:
    broken = copy.deepcopy(DOCS["Deployment"])
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = {"name": "http"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    unknown = copy.deepcopy(DOCS["Service"])
    unknown["spec"]["portz"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(unknown, KUBERNETES_VERSION, strict=True)


def test_the_deployment_runs_the_server_as_configured_and_probes_its_open_health_endpoints(tmp_path: Path) -> None:
    deployment = DOCS["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config = parse_args(container["args"])
    assert config.host == "0.0.0.0" and not config.loopback
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env[TOKEN_ENV]["valueFrom"]  # a non-loopback server needs its token
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} & set(env)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == config.port
    app = create_app(config.model_copy(update={"store": StoreConfig(uri=f"file://{tmp_path}")}), token="x" * 16)
    routes = {route.path for route in app.app.routes}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        path = container[probe]["httpGet"]["path"]
        assert path in routes and path in OPEN_PATHS, probe  # probes carry no token
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    # Shutdown: the pod's grace period outlasts the pre-stop pause, the server's drain and its last log write.
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + config.drain_seconds + config.request_log.shutdown_seconds
    # The runtime's threads leave the event loop a core of the CPU limit (the default would count the node's cores).
    assert config.threads is not None and config.threads <= float(container["resources"]["limits"]["cpu"]) - 1
    # Non-root on a read-only root filesystem; the work dir is a volume.
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] and not container["securityContext"]["allowPrivilegeEscalation"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(config.work_dir) in mounts and "/tmp" in mounts
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert pod["serviceAccountName"] == DOCS["ServiceAccount"]["metadata"]["name"]
    assert DOCS["ServiceAccount"]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")


def test_the_service_autoscaler_and_budget_select_the_deployment() -> None:
    deployment = DOCS["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        selector = DOCS[kind]["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= labels.items(), kind
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert DOCS["Service"]["spec"]["ports"][0]["targetPort"] in {p["name"] for p in container["ports"]}
    target = DOCS["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert DOCS["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= DOCS["PodDisruptionBudget"]["spec"]["minAvailable"] + 1


def test_the_server_image_runs_as_the_user_the_deployment_expects() -> None:
    dockerfile = (PROJECT / "infra" / "Dockerfile").read_text()
    stage = dockerfile.split("AS server", 1)[1].split("\nFROM ", 1)[0]
    user = re.search(r"^USER (\d+)", stage, re.MULTILINE)
    assert user and int(user.group(1)) == DOCS["Deployment"]["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert 'ENTRYPOINT ["python", "-m", "serve"]' in stage
    assert "COPY serve ./serve" in dockerfile.split("AS server", 1)[0]
