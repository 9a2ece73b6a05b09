"""Roll a registered model version out to KServe as an InferenceService, and wait until it is Ready.

    python -m pipelines.deploy --model models:/NAME@champion [--namespace NS] [--canary N] [--dry-run]
        [--params params.yaml] [--image REGISTRY/twinline@sha256:...]

The InferenceService runs this project's image (kubeflow.image) as a custom predictor,
`python -m components.serve --model models:/NAME/VERSION`, pinned to one model version: an alias is
resolved to its version here, never handed to the server, so a pod restarted later serves what was
rolled out, not whatever the alias points to by then. MLflow's address and credentials come from the
Secret kubeflow.mlflow_secret of the serving namespace; resources, replicas and the time to wait come
from params.yaml's `serve` section.

Traffic (KServe's canaryTrafficPercent, Serverless mode): when the InferenceService already serves an
older version of the model, a new version gets serve.canary_percent (or --canary) percent of the
requests and the last fully rolled-out revision the rest; 0 replaces it at once (the field is left out,
which KServe reads as 100 % to the latest revision; KServe reads an explicit 0 as "all traffic back to
the previous revision"). Deploying the version already in the spec again keeps its split (a retry moves
no traffic), or, with canary 0, promotes it to all traffic. Deploying an older version (a rollback)
replaces at once. The object is applied by server-side apply (field manager `twinline`), so a field this
tool set before and leaves out now (canaryTrafficPercent) is removed.

Kubernetes access: the in-cluster service account when run in a pod, else the kubeconfig (KUBECONFIG or
~/.kube/config, its current context). Every failure is one line (components/errors.run_cli).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import yaml

from components import tracking
from components.errors import UserError, run_cli, shorten
from components.params import Serve, check_image, load_params

log = logging.getLogger(__name__)

GROUP, API_VERSION, PLURAL, KIND = "serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService"
FIELD_MANAGER = "twinline"
CONTAINER = "kserve-container"  # KServe's name for a predictor's main container
PORT = 8080
UID = 10001  # the image's user (Dockerfile: ARG UID=10001)
VERSION_LABEL = "twinline/model-version"
MODEL_ANNOTATION = "twinline/model-uri"
MAX_NAME = 40  # KServe and Knative add "-predictor" and "-00001" to it in 63-character DNS labels
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
POLL_S = 2.0
REQUEST_TIMEOUT_S = 30


def service_name(model_name: str) -> str:
    """The InferenceService name for a registered model name: the name itself when it is already a
    DNS-1035 label (lower-case letters, digits, '-', starting with a letter, which KServe requires) of
    at most MAX_NAME characters; else a lower-cased, '-'-joined form cut to fit, with 6 hex digits of the
    name's sha256 appended, so that two model names never share one InferenceService."""
    if len(model_name) <= MAX_NAME and DNS_1035.fullmatch(model_name):
        return model_name
    base = re.sub(r"[^a-z0-9]+", "-", model_name.lower()).strip("-")
    if not base[:1].isalpha():
        base = f"m-{base}".rstrip("-")
    digest = hashlib.sha256(model_name.encode()).hexdigest()[:6]
    return f"{base[: MAX_NAME - 7].rstrip('-')}-{digest}"


def model_uri(model_name: str, version: str) -> str:
    return f"models:/{model_name}/{version}"


def render_inference_service(
    model_name: str,
    version: str,
    serve: Serve,
    image: str,
    mlflow_secret: str,
    canary_percent: int | None = None,
) -> dict[str, Any]:
    """The InferenceService serving models:/model_name/version in serve.namespace, as a dict.

    canary_percent: canaryTrafficPercent, the share of requests for this version while the previous
    revision serves the rest; None leaves the field out (all traffic to this version). The predictor runs
    as the image's non-root user with a read-only root filesystem, no privilege escalation, no
    capabilities, the RuntimeDefault seccomp profile and an emptyDir at /tmp (all the server writes);
    security settings are per container, which Knative accepts without feature flags. It gets no
    service-account token (it never calls the Kubernetes API). Raises ValueError for a version that is
    not a number."""
    if not version.isdigit():
        raise ValueError(f"model version {version!r} is not a number: an InferenceService is pinned to a version")
    uri = model_uri(model_name, version)
    name = service_name(model_name)
    labels = {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/part-of": "twinline",
        "app.kubernetes.io/managed-by": FIELD_MANAGER,
        VERSION_LABEL: version,
    }
    env = [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": mlflow_secret, "key": key, "optional": optional}}}
        for key, optional in zip(tracking.MLFLOW_ENV, (False, True, True), strict=True)
    ]
    env.append({"name": "HOME", "value": "/tmp"})  # the root filesystem is read-only: caches go to the emptyDir
    res = serve.resources

    def probe(path: str, period_s: int, failures: int) -> dict:
        return {
            "httpGet": {"path": path, "port": PORT},
            "periodSeconds": period_s,
            "timeoutSeconds": 5,
            "failureThreshold": failures,
        }

    container = {
        "name": CONTAINER,
        "image": image,
        "command": ["python", "-m", "components.serve"],
        "args": [
            "--model",
            uri,
            "--host",
            "0.0.0.0",
            "--port",
            str(PORT),
            "--max-request-bytes",
            str(serve.max_request_bytes),
        ],  # fmt: skip
        "ports": [{"containerPort": PORT, "protocol": "TCP"}],
        "env": env,
        "resources": {
            "requests": {"cpu": res.cpu_request, "memory": res.memory_request},
            "limits": {"cpu": res.cpu_limit, "memory": res.memory_limit},
        },
        # ready once the model is loaded; alive as long as the process answers (loading a model can
        # take minutes: liveness gives it 10 x 30 s before a restart)
        "readinessProbe": probe("/v2/health/ready", 10, 3),
        "livenessProbe": probe("/v2/health/live", 30, 10) | {"initialDelaySeconds": 30},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    predictor: dict[str, Any] = {
        "minReplicas": serve.min_replicas,
        "maxReplicas": serve.max_replicas,
        "labels": {VERSION_LABEL: version},
        "annotations": {MODEL_ANNOTATION: uri},
        "automountServiceAccountToken": False,
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
    }
    if canary_percent is not None:
        predictor["canaryTrafficPercent"] = canary_percent
    return {
        "apiVersion": f"{GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": serve.namespace,
            "labels": labels,
            # KServe adds Prometheus' scrape annotations to the predictor pods: the server's /metrics on its port
            "annotations": {
                MODEL_ANNOTATION: uri,
                "serving.kserve.io/enable-prometheus-scraping": "true",
                "prometheus.kserve.io/port": str(PORT),
                "prometheus.kserve.io/path": "/metrics",
            },
        },
        "spec": {"predictor": predictor},
    }


def served_model(isvc: dict) -> tuple[str, str] | None:
    """(model name, version) that an InferenceService's spec runs, read from its server's --model
    argument; None when it runs no `models:/NAME/VERSION` (not rolled out by this tool)."""
    containers = ((isvc.get("spec") or {}).get("predictor") or {}).get("containers") or []
    for container in containers:
        args = list(container.get("command") or []) + list(container.get("args") or [])
        if "--model" in args[:-1]:
            match = tracking.MODEL_URI.fullmatch(args[args.index("--model") + 1])
            if match and match["version"]:
                return match["name"], match["version"]
    return None


def canary_traffic(served: str | None, version: str, canary_percent: int, current: int | None) -> int | None:
    """canaryTrafficPercent for rolling out `version` where the spec runs `served` (None: no
    InferenceService yet) with `current` as its canaryTrafficPercent (None: not set). None = leave
    the field out: all traffic to the new revision.

    - first deploy, or canary_percent 0: None (replace at once);
    - an older version is served: canary_percent;
    - the same version: `current` (a retry moves no traffic), or None with canary_percent 0 (promote);
    - a newer version is served (a rollback): None (replace at once)."""
    if served is None or canary_percent == 0:
        return None
    if int(served) < int(version):
        return canary_percent
    if served == version:
        return current
    return None


# -- the Kubernetes API ---------------------------------------------------------------------------------


def kube_client():
    """An ApiClient for the in-cluster service account (in a pod), else for the kubeconfig's current
    context (KUBECONFIG, else ~/.kube/config). Raises UserError when neither is there."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        try:
            # KUBECONFIG as it is now: the client's own default was read when it was imported
            config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG") or None, client_configuration=configuration
            )
        except (config.ConfigException, OSError, TypeError, ValueError, yaml.YAMLError) as exc:
            where = os.environ.get("KUBECONFIG") or "~/.kube/config"
            problem = " ".join(str(exc).split()) or type(exc).__name__
            raise UserError(
                f"no Kubernetes configuration: not in a pod, and no usable kubeconfig at {where} "
                f"({shorten(problem, 120)}); set KUBECONFIG or `kubectl config use-context`"
            ) from None
    return client.ApiClient(configuration)


def api_message(exc) -> str:
    """What the API server said in a kubernetes ApiException: its Status message, else the HTTP reason."""
    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)


@contextlib.contextmanager
def api_errors(api, namespace: str) -> Iterator[None]:
    """Turn the Kubernetes client's failures into one line (UserError) saying what to check."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    host = api.configuration.host
    try:
        yield
    except urllib3.exceptions.HTTPError as exc:
        reason = getattr(exc, "reason", None) or exc
        detail = re.search(
            r"Connection refused|timed out|Name or service not known|Failed to resolve|\[SSL[^\]]*\]", str(reason)
        )
        why = detail.group(0) if detail else shorten(str(reason), 100)
        raise UserError(
            f"Kubernetes API server {host} is not reachable ({why}); check KUBECONFIG and its current context"
        ) from None
    except ApiException as exc:
        message = shorten(api_message(exc), 200)
        hint = {
            401: "the credentials were refused: check the kubeconfig's user or the service account token",
            403: f"the identity needs the Role inferenceservice-deployer in {namespace} (k8s/base/serving)",
            404: f"is KServe installed (CRD inferenceservices.serving.kserve.io) and does namespace {namespace} exist?",
        }.get(exc.status, "")
        raise UserError(
            f"Kubernetes API server {host}: HTTP {exc.status}: {message}" + (f"; {hint}" if hint else "")
        ) from None


def _path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{API_VERSION}/namespaces/{namespace}/{PLURAL}/{name}"


def get_inference_service(api, namespace: str, name: str) -> dict | None:
    """The InferenceService as the API server has it, or None when there is none."""
    from kubernetes.client.exceptions import ApiException

    try:
        return api.call_api(
            _path(namespace, name),
            "GET",
            header_params={"Accept": "application/json"},
            response_type="object",
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _request_timeout=REQUEST_TIMEOUT_S,
        )
    except ApiException as exc:
        if exc.status == 404 and "inferenceservices" in api_message(exc).lower() and "not found" in api_message(exc):
            return None
        raise


def apply_inference_service(api, isvc: dict) -> dict:
    """Server-side apply (PATCH, application/apply-patch+yaml, fieldManager twinline, force: this tool
    owns the fields it sets, even if someone changed them by hand). Returns the object as applied."""
    meta = isvc["metadata"]
    return api.call_api(
        _path(meta["namespace"], meta["name"]),
        "PATCH",
        query_params=[("fieldManager", FIELD_MANAGER), ("force", "true")],
        header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
        body=isvc,  # JSON is YAML: the client sends it as JSON text
        response_type="object",
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
        _request_timeout=REQUEST_TIMEOUT_S,
    )


def not_ready(isvc: dict | None, generation: int | None) -> str:
    """Why an InferenceService is not Ready, in one line: the conditions that are not True, with reason
    and message; or that the controller has not looked at this generation yet; "" when it is Ready."""
    if isvc is None:
        return "it is gone (deleted meanwhile?)"
    status = isvc.get("status") or {}
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and observed < generation:
        return (
            f"the KServe controller has not reconciled generation {generation} yet (it saw {observed}): is it "
            "running in the cluster?"
        )
    conditions = status.get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready is not None and ready.get("status") == "True":
        return ""
    if not conditions:
        return "no status conditions yet: is the KServe controller running in the cluster?"
    failing = [c for c in conditions if c.get("status") != "True"]
    # the component conditions first (they say why), Ready (their sum) last
    failing.sort(key=lambda c: c.get("type") == "Ready")

    def describe(c: dict) -> str:
        why = ": ".join(" ".join(str(c[k]).split()) for k in ("reason", "message") if c.get(k))
        why = why if len(why) <= 200 else why[:200] + "..."
        return f"{c.get('type')}={c.get('status')}" + (f" ({why})" if why else "")

    return "; ".join(describe(c) for c in failing)


def wait_ready(
    api, namespace: str, name: str, generation: int | None, timeout_s: float, poll_s: float = POLL_S
) -> dict:
    """Poll the InferenceService until status.conditions[Ready] is True for `generation` (the one just
    applied: a Ready left from the previous version does not count). Raises UserError after timeout_s,
    naming the conditions that are not True."""
    deadline = time.monotonic() + timeout_s
    while True:
        isvc = get_inference_service(api, namespace, name)
        why = not_ready(isvc, generation)
        if not why:
            assert isvc is not None
            return isvc
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise UserError(
                f"InferenceService {namespace}/{name} is not Ready after {timeout_s:g} s: {why}; "
                f"`kubectl -n {namespace} describe inferenceservice {name}` says more"
            )
        time.sleep(min(poll_s, remaining))


def deploy(
    model_name: str,
    version: str,
    serve: Serve,
    image: str,
    mlflow_secret: str,
    canary_percent: int | None = None,
    timeout_s: float | None = None,
    poll_s: float = POLL_S,
    api=None,
) -> dict:
    """Apply the InferenceService for models:/model_name/version and wait until it is Ready.

    canary_percent: overrides serve.canary_percent; timeout_s: serve.ready_timeout_s. Returns
    {"name", "namespace", "version", "previous_version", "canary_percent", "url", "manifest"}.
    Raises UserError when the API server cannot be reached or refuses, when an InferenceService of that
    name serves another model (or was not rolled out by this tool), or when it is not Ready in time."""
    api = api or kube_client()
    name, namespace = service_name(model_name), serve.namespace
    share = serve.canary_percent if canary_percent is None else canary_percent
    with api_errors(api, namespace):
        existing = get_inference_service(api, namespace, name)
        served = served_model(existing) if existing is not None else None
        if existing is not None and (served is None or served[0] != model_name):
            running = f"serves {model_uri(*served)}" if served else "was not rolled out by pipelines.deploy"
            raise UserError(
                f"InferenceService {namespace}/{name} exists and {running}, not {model_name}: delete it or "
                "deploy under another register.model_name"
            )
        current = ((existing or {}).get("spec") or {}).get("predictor", {}).get("canaryTrafficPercent")
        canary = canary_traffic(served[1] if served else None, version, share, current)
        manifest = render_inference_service(model_name, version, serve, image, mlflow_secret, canary)
        applied = apply_inference_service(api, manifest)
        log.info(
            "applied InferenceService %s/%s: %s%s; waiting up to %s s for Ready",
            namespace,
            name,
            model_uri(model_name, version),
            f" with {canary} % of the traffic (version {served[1]} keeps the rest)"
            if canary is not None and served
            else "",
            timeout_s or serve.ready_timeout_s,
        )
        generation = (applied.get("metadata") or {}).get("generation")
        ready = wait_ready(api, namespace, name, generation, timeout_s or serve.ready_timeout_s, poll_s)
    return {
        "name": name,
        "namespace": namespace,
        "version": version,
        "previous_version": served[1] if served else None,
        "canary_percent": canary,
        "url": (ready.get("status") or {}).get("url"),
        "manifest": manifest,
    }


# -- the CLI ----------------------------------------------------------------------------------------------


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        description="Deploy a registered model version to KServe (InferenceService) and wait until it is Ready."
    )
    parser.add_argument("--model", required=True, help="models:/NAME@ALIAS (e.g. @champion) or models:/NAME/VERSION")
    parser.add_argument("--namespace", help="where the InferenceService lives (default: serve.namespace)")
    parser.add_argument(
        "--canary",
        type=int,
        help="percent of the traffic for the new version while an older one serves the rest; 0 = replace at "
        "once (default: serve.canary_percent)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the InferenceService as YAML and contact no cluster (a --canary above 0 is shown as if an "
        "older version were serving)",
    )
    parser.add_argument("--params", default="params.yaml", help="the params file (serve and kubeflow sections)")
    parser.add_argument("--image", help="the server image (default: kubeflow.image)")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    serve = params.serve
    if args.namespace is not None:
        from pydantic import ValidationError

        try:
            serve = Serve.model_validate(serve.model_dump() | {"namespace": args.namespace})
        except ValidationError as exc:
            raise UserError(f"--namespace: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    if args.canary is not None and not 0 <= args.canary <= 100:
        raise UserError(f"--canary {args.canary}: a share of the traffic in percent, 0 (replace at once) to 100")
    try:
        image = check_image(args.image) if args.image else params.kubeflow.image
    except ValueError as exc:
        raise UserError(f"--image: {exc}") from None
    tracking.configure(create=False)
    found = tracking.model_version(args.model, "--model", "nothing was deployed")
    name, version = found.name, str(found.version)
    secret = params.kubeflow.mlflow_secret
    if args.dry_run:
        share = serve.canary_percent if args.canary is None else args.canary
        manifest = render_inference_service(name, version, serve, image, secret, share or None)
        print(yaml.safe_dump(manifest, sort_keys=False), end="")
        return
    result = deploy(name, version, serve, image, secret, canary_percent=args.canary)
    traffic = (
        f"{result['canary_percent']} % of the traffic (version {result['previous_version']} keeps the rest)"
        if result["canary_percent"] is not None
        else "all traffic"
    )
    print(
        f"{result['namespace']}/{result['name']}: {model_uri(name, version)} is Ready with {traffic}"
        + (f" at {result['url']}" if result["url"] else "")
    )


if __name__ == "__main__":
    run_cli(main)
