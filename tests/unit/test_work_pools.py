"""The Docker and Kubernetes work pools: infra/work-pools/ templates and infra/work_pools.py.

The templates pass the checks the Prefect server runs on a new pool, render with Prefect's templating,
and what a worker would submit is valid: the Kubernetes Job strictly against the API schemas
(kubernetes-validate, offline), the Docker container arguments through docker-py. A broken template
fails with a message that names the problem.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

import prefect

PROJECT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("work_pools", PROJECT / "infra" / "work_pools.py")
work_pools = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(work_pools)
TemplateError = work_pools.TemplateError

PROJECT_VERSION = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["version"]
AWS_KEYS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
# What `prefect work-pool get-default-base-job-template --type T` answers offline.
PREFECT_DEFAULTS = json.loads(
    (Path(prefect.__file__).parent / "server" / "api" / "collections_data" / "views" / "aggregate-worker-metadata.json").read_text()
)


def _prefect_default(pool_type: str) -> dict:
    return PREFECT_DEFAULTS[f"prefect-{pool_type}"][pool_type]["default_base_job_configuration"]


def _container(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("pool_type", work_pools.POOL_TYPES)
def test_each_template_passes_prefect_the_worker_and_the_platform(pool_type: str) -> None:
    submitted = work_pools.validate(pool_type)
    assert submitted


@pytest.mark.parametrize("pool_type", work_pools.POOL_TYPES)
def test_each_template_keeps_every_variable_and_field_of_prefects_default(pool_type: str) -> None:
    ours, default = work_pools.load_template(pool_type), _prefect_default(pool_type)
    # Job variables a deployment may set on any pool of this type work on ours too, with the same types. A Prefect
    # upgrade that adds one fails here: refresh the template from `prefect work-pool get-default-base-job-template`.
    for name, spec in default["variables"]["properties"].items():
        assert name in ours["variables"]["properties"], name
        assert ours["variables"]["properties"][name].get("type") == spec.get("type"), name
    assert set(default["job_configuration"]) <= set(ours["job_configuration"])
    # The worker fills in the API URL and the flow run's environment; no template pins them.
    assert "PREFECT_API_URL" not in json.dumps(ours)


def test_the_kubernetes_job_runs_the_project_image_as_the_role_carrying_service_account() -> None:
    job = work_pools.validate("kubernetes")
    pod = job["spec"]["template"]["spec"]
    container = _container(job)
    assert container["image"] == f"lepton-pipelines:{PROJECT_VERSION}" and container["imagePullPolicy"] == "IfNotPresent"
    assert pod["serviceAccountName"] == work_pools.SERVICE_ACCOUNT
    assert job["spec"]["ttlSecondsAfterFinished"] > 0 and job["spec"]["backoffLimit"] == 0
    assert {"cpu", "memory"} == set(container["resources"]["requests"]) == set(container["resources"]["limits"])
    # No key anywhere: the pod's identity is the service account's IAM role (IRSA).
    names = {entry["name"] for entry in container["env"]}
    assert not AWS_KEYS & names and "PREFECT_API_URL" in names  # the worker's, under the template's
    assert not any(word in json.dumps(work_pools.load_template("kubernetes")) for word in AWS_KEYS)
    assert "envFrom" not in container
    # The project's work directory (where relative store and inbox paths land) is a volume; /dev/shm is big enough.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/opt/lepton/.lepton"]]["emptyDir"]["sizeLimit"]
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert container["args"] == ["prefect", "flow-run", "execute"]


def test_the_service_account_carries_the_iam_role_and_lives_in_the_jobs_namespace() -> None:
    job = work_pools.validate("kubernetes")
    account = work_pools.service_account("arn:aws:iam::123456789012:role/lepton-pipelines", job["metadata"]["namespace"])
    kubernetes_validate.validate(account, work_pools.KUBERNETES_VERSION, strict=True)
    assert account["metadata"]["name"] == job["spec"]["template"]["spec"]["serviceAccountName"]
    assert account["metadata"]["namespace"] == job["metadata"]["namespace"]
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == "arn:aws:iam::123456789012:role/lepton-pipelines"
    with pytest.raises(ValueError, match="role ARN"):
        work_pools.service_account("AKIAIOSFODNN7EXAMPLE")


def test_job_variables_override_the_defaults_in_the_rendered_job() -> None:
    job = work_pools.validate(
        "kubernetes",
        values={"image": "registry.example.com/lepton-pipelines:0.2.0", "cpu_limit": "8", "memory_limit": "16Gi",
                "namespace": "ml", "env": {"AWS_REGION": "eu-west-1"}, "name": "nightly-build"},
    )
    container = _container(job)
    assert container["image"] == "registry.example.com/lepton-pipelines:0.2.0"
    assert container["resources"]["limits"] == {"cpu": "8", "memory": "16Gi"}
    assert container["resources"]["requests"]["memory"] == "4Gi"  # the default stays where nothing overrides it
    assert job["metadata"]["namespace"] == "ml" and job["metadata"]["generateName"] == "nightly-build-"
    assert {"name": "AWS_REGION", "value": "eu-west-1"} in container["env"]


def test_the_docker_container_gets_the_image_limits_and_work_volume() -> None:
    args = work_pools.validate("docker")
    host = args["host_config"]
    assert args["image"] == f"lepton-pipelines:{PROJECT_VERSION}"
    assert host["Memory"] == 8 * 1024**3 and host["NanoCpus"] == 4 * 10**9 and host["ShmSize"] == 1024**3
    assert "lepton-work:/opt/lepton/.lepton" in host["Binds"] and host["AutoRemove"] is True
    assert not AWS_KEYS & set(args["environment"])
    bigger = work_pools.validate("docker", values={"mem_limit": "16g", "nano_cpus": 8 * 10**9, "image": "lepton-pipelines:dev"})
    assert bigger["host_config"]["Memory"] == 16 * 1024**3 and bigger["host_config"]["NanoCpus"] == 8 * 10**9
    assert bigger["image"] == "lepton-pipelines:dev"


def test_the_image_is_the_one_the_dockerfile_builds_with_the_code_where_the_pull_step_points() -> None:
    dockerfile = (PROJECT / "infra" / "Dockerfile").read_text()
    assert "-t lepton-pipelines" in dockerfile and re.search(r"^FROM base AS worker$", dockerfile, re.MULTILINE)
    assert "LEPTON_PROJECT_DIR=/opt/lepton" in dockerfile and "WORKDIR /opt/lepton" in dockerfile
    pull = yaml.safe_load((PROJECT / "prefect.yaml").read_text())["pull"]
    assert pull[0]["prefect.deployments.steps.set_working_directory"]["directory"] == "{{ $LEPTON_PROJECT_DIR }}"


def test_an_undeclared_variable_fails_prefects_check() -> None:
    template = work_pools.load_template("kubernetes")
    _container(template["job_configuration"]["job_manifest"])["resources"]["limits"]["nvidia.com/gpu"] = "{{ gpu_limit }}"
    with pytest.raises(TemplateError, match=r"undeclared variable\(s\): gpu_limit"):
        work_pools.validate("kubernetes", template)


def test_a_default_outside_its_schema_fails() -> None:
    template = work_pools.load_template("kubernetes")
    template["variables"]["properties"]["finished_job_ttl"]["default"] = "one day"
    with pytest.raises(TemplateError, match="variable defaults"):
        work_pools.validate("kubernetes", template)


def test_an_invalid_kubernetes_field_fails_the_schema_with_its_path() -> None:
    template = work_pools.load_template("kubernetes")
    _container(template["job_configuration"]["job_manifest"])["resourcez"] = {}
    with pytest.raises(TemplateError, match=r"spec\.template\.spec\.containers\.0: Additional properties .*'resourcez'"):
        work_pools.validate("kubernetes", template)
    template = work_pools.load_template("kubernetes")
    template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["volumes"][0]["emptyDir"]["sizeLimit"] = {"Gi": 20}
    with pytest.raises(TemplateError, match=r"spec\.template\.spec\.volumes\.0\.emptyDir\.sizeLimit"):
        work_pools.validate("kubernetes", template)


def test_a_job_the_worker_would_refuse_fails() -> None:
    template = work_pools.load_template("kubernetes")
    template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    with pytest.raises(TemplateError, match="restartPolicy must have value 'Never'"):
        work_pools.validate("kubernetes", template)


def test_aws_keys_in_a_template_or_job_variables_fail() -> None:
    template = work_pools.load_template("kubernetes")
    template["variables"]["properties"]["env"]["default"] = {"AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE"}
    with pytest.raises(TemplateError, match="AWS_ACCESS_KEY_ID"):
        work_pools.validate("kubernetes", template)
    with pytest.raises(TemplateError, match="AWS_SECRET_ACCESS_KEY"):
        work_pools.validate("docker", values={"env": {"AWS_SECRET_ACCESS_KEY": "x"}})


def test_docker_values_docker_refuses_fail() -> None:
    with pytest.raises(TemplateError, match="docker-py"):
        work_pools.validate("docker", values={"mem_limit": "lots"})
    template = work_pools.load_template("docker")
    template["job_configuration"]["container_create_kwargs"]["cpu_limit"] = 4
    with pytest.raises(TemplateError, match="cpu_limit"):
        work_pools.validate("docker", template)
    with pytest.raises(TemplateError, match="not both"):
        work_pools.validate("docker", values={"networks": ["lepton"], "network_mode": "host"})


def test_retarget_moves_every_deployment_and_nothing_else() -> None:
    spec = yaml.safe_load((PROJECT / "prefect.yaml").read_text())
    moved = work_pools.retarget(spec, "lepton-kubernetes")
    assert len(moved["deployments"]) == len(spec["deployments"]) >= 6
    for before, after in zip(spec["deployments"], moved["deployments"], strict=True):
        assert after["work_pool"]["name"] == "lepton-kubernetes"
        assert after["work_pool"].get("work_queue_name") == before["work_pool"].get("work_queue_name")
        assert {k: v for k, v in after.items() if k != "work_pool"} == {k: v for k, v in before.items() if k != "work_pool"}
    assert {k: v for k, v in moved.items() if k != "deployments"} == {k: v for k, v in spec.items() if k != "deployments"}
    # prefect.yaml itself stays on the process pool of `make serve`.
    assert {d["work_pool"]["name"] for d in spec["deployments"]} == {"lepton-process"}


def test_the_cli_validates_and_prints_the_service_account(capsys: pytest.CaptureFixture[str]) -> None:
    assert work_pools.main(["validate"]) == 0
    assert "kubernetes: infra/work-pools/kubernetes.json is valid" in capsys.readouterr().out
    assert work_pools.main(["service-account", "--role-arn", "arn:aws:iam::123456789012:role/lepton-pipelines"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["kind"] == "ServiceAccount" and printed["metadata"]["name"] == work_pools.SERVICE_ACCOUNT
    assert work_pools.main(["service-account", "--role-arn", "not-an-arn"]) == 2
    assert "role ARN" in capsys.readouterr().err


def test_the_templates_are_not_changed_by_validation() -> None:
    template = work_pools.load_template("kubernetes")
    before = copy.deepcopy(template)
    work_pools.validate("kubernetes", template, values={"cpu_limit": "8"})
    assert template == before
