"""Docker and Kubernetes work pools for every deployment of prefect.yaml.

    .venv/bin/python infra/work_pools.py validate [--type kubernetes|docker]
    .venv/bin/python infra/work_pools.py create --type kubernetes|docker [--name NAME]
    .venv/bin/python infra/work_pools.py deploy --type kubernetes|docker [--name NAME]
    .venv/bin/python infra/work_pools.py service-account [--role-arn ARN] [--namespace NS]

The base job templates are infra/work-pools/{kubernetes,docker}.json, derived from
`prefect work-pool get-default-base-job-template --type T`. `validate` checks a template three ways:
the checks the Prefect server runs when a pool is created (every placeholder of the job configuration
is a declared variable, the variables form a valid JSON schema, every default conforms to it); the
job configuration a worker renders from the defaults (Prefect's own templating); what the worker would
then submit: the Kubernetes Job, strictly against the Kubernetes API schemas (kubernetes-validate,
offline), or the Docker container arguments, through docker-py's own conversion. `create` validates,
then creates or updates the pool on the Prefect API of PREFECT_API_URL. `deploy` also deploys every
deployment of prefect.yaml to the pool: `prefect deploy --all` takes each pool name from the file and
ignores `--pool`, so it reads a copy of prefect.yaml whose deployments name the chosen pool.
`service-account` prints the ServiceAccount the Kubernetes flow-run pods run as, with its IAM role
(IRSA), for `kubectl apply -f -`. Exit 2 on a template that does not validate.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

PROJECT = Path(__file__).resolve().parents[1]
TEMPLATES = PROJECT / "infra" / "work-pools"
PREFECT_YAML = PROJECT / "prefect.yaml"
POOL_TYPES = ("kubernetes", "docker")
POOL_NAMES = {"kubernetes": "lepton-kubernetes", "docker": "lepton-docker"}
# The Kubernetes release the manifests of infra/k8s are checked against too (tests/unit/test_k8s_manifests.py).
KUBERNETES_VERSION = "1.33.0"
SERVICE_ACCOUNT = "lepton-pipelines"
EXAMPLE_ROLE_ARN = "arn:aws:iam::111122223333:role/lepton-pipelines"
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
# Credentials come from the pod's role (IRSA) or the host's instance role, never from a template.
AWS_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# What a worker adds to every flow run (names as in prefect.workers.base; values only need the right shape).
WORKER_ENV = {"PREFECT_API_URL": "http://prefect-server:4200/api", "PREFECT__FLOW_RUN_ID": "00000000-0000-0000-0000-000000000000"}
# The worker's job configuration model, where the worker's package is installed.
WORKER_CONFIGURATIONS = {
    "kubernetes": ("prefect_kubernetes.worker", "KubernetesWorkerJobConfiguration"),
    "docker": ("prefect_docker.worker", "DockerWorkerJobConfiguration"),
}
# Every Job the Kubernetes worker submits must contain these values (prefect-kubernetes'
# _get_base_job_manifest, which its job configuration checks with the same JSON-patch diff).
REQUIRED_JOB = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"labels": {}},
    "spec": {
        "template": {
            "spec": {"parallelism": 1, "completions": 1, "restartPolicy": "Never", "containers": [{"name": "prefect-job"}]}
        }
    },
}


class TemplateError(ValueError):
    """A base job template that Prefect, its worker or the platform would refuse; the message says where and why."""


def load_template(pool_type: str) -> dict[str, Any]:
    """The base job template of ``pool_type`` from infra/work-pools/."""
    if pool_type not in POOL_TYPES:
        raise ValueError(f"pool type {pool_type!r}: expected one of {', '.join(POOL_TYPES)}")
    return json.loads((TEMPLATES / f"{pool_type}.json").read_text())


def check_template(template: Mapping[str, Any], pool_type: str) -> None:
    """Run the checks the Prefect server runs on a new or updated work pool's base job template.

    ``WorkPoolCreate`` (its ``validate_base_job_template`` validator: every ``{{ placeholder }}`` of the job
    configuration is a declared variable), then, as ``validate_job_variable_defaults_for_work_pool`` does, the
    variables must be a valid JSON schema and every default must conform to it.

    Raises:
        TemplateError: the server would answer 422; the message names the variable or the failed rule.
    """
    from pydantic import ValidationError

    from prefect.server.schemas.actions import WorkPoolCreate
    from prefect.utilities.schema_tools import ValidationError as SchemaError
    from prefect.utilities.schema_tools import is_valid_schema, validate

    try:
        WorkPoolCreate(name=POOL_NAMES.get(pool_type, pool_type), type=pool_type, base_job_template=dict(template))
    except ValidationError as exc:
        raise TemplateError(f"{pool_type} template: {exc.errors()[0]['msg']}") from exc
    variables = template["variables"]
    try:
        is_valid_schema(variables, preprocess=False)
    except ValueError as exc:
        raise TemplateError(f"{pool_type} template: variables: {exc}") from exc
    defaults = {
        name: spec["default"]
        for name, spec in variables.get("properties", {}).items()
        # A block reference ({"$ref": ...}) is resolved by the server; none of ours uses one.
        if "default" in spec and not (isinstance(spec["default"], dict) and "$ref" in spec["default"])
    }
    try:
        validate(defaults, variables, raise_on_error=True, preprocess=True, ignore_required=True, allow_none_with_default=True)
    except SchemaError as exc:
        raise TemplateError(f"{pool_type} template: variable defaults: {exc}") from exc


def render(template: Mapping[str, Any], values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The job configuration a worker renders from ``template`` before a flow run.

    The variables' defaults, overridden by ``values`` (a deployment's job variables), substituted into the
    job configuration with Prefect's templating; a whole-value placeholder without a value drops its key,
    as on a worker (``BaseJobConfiguration.from_template_and_values``).
    """
    from prefect.utilities.templating import apply_values
    from prefect.workers.base import BaseJobConfiguration

    variables = BaseJobConfiguration._get_base_config_defaults(template["variables"].get("properties", {}))
    variables.update(values or {})
    return apply_values(copy.deepcopy(dict(template["job_configuration"])), variables)


def kubernetes_job(configuration: Mapping[str, Any], env: Mapping[str, str] = WORKER_ENV) -> dict[str, Any]:
    """The Job the Kubernetes worker submits for a rendered ``configuration``.

    What prefect-kubernetes' ``prepare_for_flow_run`` fills in: the worker's environment (``env``) under the
    configuration's, as a list of name/value pairs; the flow-run command as container args; the
    configuration's labels; the namespace; a generateName when the name was left empty.
    """
    job = copy.deepcopy(dict(configuration["job_manifest"]))
    metadata = job.setdefault("metadata", {})
    metadata.setdefault("namespace", configuration.get("namespace", "default"))
    metadata["labels"] = {**metadata.get("labels", {}), **configuration.get("labels", {})}
    if metadata.get("generateName", "-") == "-":
        metadata["generateName"] = f"{configuration.get('name') or 'prefect-job'}-"
    (container, *_) = job["spec"]["template"]["spec"]["containers"]
    merged = {**env, **configuration.get("env", {})}
    container["env"] = [{"name": k, "value": str(v)} for k, v in merged.items() if v is not None]
    container["args"] = shlex.split(configuration.get("command") or "prefect flow-run execute")
    return job


def docker_container_args(configuration: Mapping[str, Any], env: Mapping[str, str] = WORKER_ENV) -> dict[str, Any]:
    """The arguments docker-py's ``containers.create`` gets from the Docker worker for ``configuration``.

    Built as prefect-docker's ``_build_container_settings`` does (its fields, then ``container_create_kwargs``),
    then converted by docker-py's own ``_create_container_args``, which refuses an unknown argument and
    parses sizes and CPU limits the way the Docker API call would.

    Raises:
        TemplateError: docker-py refuses an argument or a value.
    """
    import docker.constants
    import docker.errors
    from docker.models.containers import _create_container_args

    networks = configuration.get("networks") or []
    if networks and configuration.get("network_mode"):
        raise TemplateError("docker template: set networks or network_mode, not both (Docker refuses the pair)")
    settings = {
        "image": configuration.get("image"),
        "network": networks[0] if networks else None,
        "network_mode": configuration.get("network_mode"),
        "command": configuration.get("command") or "prefect flow-run execute",
        "environment": {**env, **configuration.get("env", {})},
        "auto_remove": configuration.get("auto_remove", False),
        "labels": configuration.get("labels", {}),
        "name": configuration.get("name"),
        "volumes": list(configuration.get("volumes", [])),
        "mem_limit": configuration.get("mem_limit"),
        "memswap_limit": configuration.get("memswap_limit"),
        "privileged": configuration.get("privileged", False),
        **configuration.get("container_create_kwargs", {}),
    }
    try:
        return _create_container_args({**settings, "version": docker.constants.DEFAULT_DOCKER_API_VERSION})
    except (TypeError, ValueError, docker.errors.DockerException) as exc:
        raise TemplateError(f"docker template: the container arguments are refused by docker-py: {exc}") from exc


def validate(
    pool_type: str, template: Mapping[str, Any] | None = None, values: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Validate a base job template as the Prefect server, its worker and the platform would.

    Args:
        pool_type: ``kubernetes`` or ``docker``.
        template: the base job template; default: the one of infra/work-pools/.
        values: job variables to render with, over the defaults (a deployment's ``job_variables``).

    Returns:
        What the worker would submit: the Kubernetes Job manifest, or docker-py's container-create arguments.

    Raises:
        TemplateError: the first problem found, naming the template, the place and the rule.
    """
    template = load_template(pool_type) if template is None else template
    check_template(template, pool_type)
    text = json.dumps([template, values or {}])
    if keys := [key for key in AWS_KEYS if key in text]:
        raise TemplateError(
            f"{pool_type} template: {', '.join(keys)} set; credentials come from the role of the pod's service account "
            "(IRSA) or of the Docker host (instance profile), never from a job template"
        )
    configuration = render(template, values)
    _check_worker_configuration(configuration, pool_type)
    if pool_type == "docker":
        return docker_container_args(configuration)
    import kubernetes_validate

    job = kubernetes_job(configuration)
    _check_required_job_values(job)
    try:
        kubernetes_validate.validate(_without_worker_only_fields(job), KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(part) for part in exc.path) or "(top level)"
        raise TemplateError(
            f"kubernetes template: the rendered Job fails the Kubernetes {KUBERNETES_VERSION} schema at {where}: {exc.message}"
        ) from exc
    return job


def _check_worker_configuration(configuration: Mapping[str, Any], pool_type: str) -> None:
    """Build the worker's job configuration model from the rendered configuration.

    The worker's own class where its package is installed (prefect-kubernetes, prefect-docker: a worker
    host), Prefect's ``BaseJobConfiguration`` (command, env, labels, name) otherwise.
    """
    from pydantic import ValidationError

    from prefect.workers.base import BaseJobConfiguration

    module, name = WORKER_CONFIGURATIONS[pool_type]
    try:
        model: type[BaseJobConfiguration] = getattr(importlib.import_module(module), name)
    except ImportError:
        model = BaseJobConfiguration
    try:
        model.model_validate(copy.deepcopy(dict(configuration)))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(configuration)"
        raise TemplateError(f"{pool_type} template: job configuration field {where}: {first['msg']}") from exc


def _check_required_job_values(job: Mapping[str, Any]) -> None:
    """The Kubernetes worker's own check: the Job keeps the values it relies on (one pod, never restarted, its container name)."""
    from jsonpatch import JsonPatch

    patch = JsonPatch.from_diff(dict(job), REQUIRED_JOB)
    missing = sorted(op["path"] for op in patch if op["op"] == "add")
    wrong = sorted(f"{op['path']} must have value {op['value']!r}" for op in patch if op["op"] == "replace")
    if missing:
        raise TemplateError(f"kubernetes template: the worker refuses a Job missing {', '.join(missing)}")
    if wrong:
        raise TemplateError(f"kubernetes template: the worker refuses a Job whose {', '.join(wrong)}")


def _without_worker_only_fields(job: Mapping[str, Any]) -> dict[str, Any]:
    """``job`` without the two pod-spec fields the worker insists on and the API server drops.

    The Kubernetes worker refuses a Job whose pod spec lacks ``parallelism: 1`` and ``completions: 1``
    (REQUIRED_JOB), but a pod spec has no such fields: the API server drops them with a warning (its
    default field validation). Every other field is checked strictly.
    """
    job = copy.deepcopy(dict(job))
    pod = job["spec"]["template"]["spec"]
    for field in ("parallelism", "completions"):
        if pod.get(field) == 1:
            del pod[field]
    return job


def service_account(role_arn: str, namespace: str = "default", name: str = SERVICE_ACCOUNT) -> dict[str, Any]:
    """The ServiceAccount of the Kubernetes flow-run pods: on EKS, ``role_arn`` is their identity (IRSA).

    The role needs the rights of infra/s3/pipeline-role-policy.json; its trust policy names this service
    account (``system:serviceaccount:{namespace}:{name}``).

    Raises:
        ValueError: ``role_arn`` is not an IAM role ARN.
    """
    if not ROLE_ARN.match(role_arn):
        raise ValueError(f"role ARN {role_arn!r}: expected arn:aws:iam::<12-digit account>:role/<name>")
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "lepton-pipelines"},
            "annotations": {"eks.amazonaws.com/role-arn": role_arn},
        },
    }


def retarget(spec: Mapping[str, Any], pool: str) -> dict[str, Any]:
    """A copy of prefect.yaml's ``spec`` whose every deployment runs on work pool ``pool`` (queues kept)."""
    spec = copy.deepcopy(dict(spec))
    for deployment in spec.get("deployments", []):
        work_pool = deployment.get("work_pool") or {}
        deployment["work_pool"] = {**work_pool, "name": pool}
    return spec


def create_pool(pool_type: str, name: str) -> None:
    """Validate the template of ``pool_type``, then create or update work pool ``name`` with it."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    template = load_template(pool_type)
    validate(pool_type, template)
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=name, type=pool_type, base_job_template=template), overwrite=True)


def deploy(pool_type: str, name: str) -> int:
    """Create or update pool ``name`` and deploy every deployment of prefect.yaml to it; ``prefect deploy``'s exit status."""
    create_pool(pool_type, name)
    spec = retarget(yaml.safe_load(PREFECT_YAML.read_text()), name)
    with tempfile.TemporaryDirectory() as tmp:
        prefect_file = Path(tmp) / "prefect.yaml"
        prefect_file.write_text(yaml.safe_dump(spec, sort_keys=False))
        # From the project folder: entrypoints are relative to it.
        command = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_file)]
        return subprocess.run(command, cwd=PROJECT, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("validate", help="validate the templates of infra/work-pools/ (offline)")
    check.add_argument("--type", choices=POOL_TYPES, action="append", dest="types")
    helps = {"create": "create or update the pool", "deploy": "create or update the pool, deploy every deployment to it"}
    for command, help_text in helps.items():
        sub = commands.add_parser(command, help=help_text)
        sub.add_argument("--type", choices=POOL_TYPES, required=True)
        sub.add_argument("--name", help="work pool name (default: lepton-kubernetes or lepton-docker)")
    account = commands.add_parser("service-account", help="print the flow-run pods' ServiceAccount (YAML)")
    account.add_argument("--role-arn", required=True, help=f"the pipeline role, e.g. {EXAMPLE_ROLE_ARN}")
    namespace = load_template("kubernetes")["variables"]["properties"]["namespace"]["default"]
    account.add_argument("--namespace", default=namespace, help=f"the pool's namespace (default: {namespace})")
    args = parser.parse_args(argv)
    try:
        if args.command == "validate":
            for pool_type in args.types or POOL_TYPES:
                validate(pool_type)
                print(f"{pool_type}: infra/work-pools/{pool_type}.json is valid")
            return 0
        if args.command == "service-account":
            print(yaml.safe_dump(service_account(args.role_arn, args.namespace), sort_keys=False), end="")
            return 0
        name = args.name or POOL_NAMES[args.type]
        if args.command == "create":
            create_pool(args.type, name)
            print(f"work pool {name} ({args.type}) created or updated from infra/work-pools/{args.type}.json")
            return 0
        return deploy(args.type, name)
    except (TemplateError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
