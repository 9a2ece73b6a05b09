"""pipelines/deploy.py: the InferenceService it renders (against KServe's own CRD schema), server-side apply
and the wait for Ready, the CLI on a real MLflow registry, and the pipeline's deploy condition under kfp.local.

No Kubernetes API server (and no KServe) can run here: the apply tests talk to a small local HTTP server that
stands in for it (StandInKubeApi, tests named `stand_in`), reached through a kubeconfig like a real cluster,
and record what the real `kubernetes` client sends. The stand-in's apply replaces the spec with the applied
one (what server-side apply does when one field manager owns every field) and plays KServe's controller by
setting status.observedGeneration and the conditions after a few polls.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from components import tracking
from components.errors import UserError
from components.params import Serve, load_params
from conftest import REPO
from pipelines import deploy as d

CRD = REPO.parent / "shared" / "schemas" / "inferenceservices.crd.yaml"
IMAGE = "registry.test/twinline@sha256:" + "ab" * 32
MODEL = "digits-classifier"
NAMESPACE = "twinline-serving"
TOKEN = "t0ken"


# -- the upstream schema ----------------------------------------------------------------------------------


@functools.cache
def crd_schema() -> dict:
    if not CRD.exists():
        pytest.skip(f"{CRD} is absent: the upstream KServe CRD to validate against (see its README)")
    crd = yaml.load(CRD.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")["schema"]["openAPIV3Schema"]


def unknown_fields(obj, schema: dict, where: str = "") -> list[str]:
    """Keys the schema does not declare: the API server would drop them without a word (structural pruning)."""
    if schema.get("x-kubernetes-preserve-unknown-fields") or "x-kubernetes-int-or-string" in schema:
        return []
    found = []
    if isinstance(obj, dict):
        properties, extra = schema.get("properties"), schema.get("additionalProperties")
        for key, value in obj.items():
            if properties is not None and key in properties:
                found += unknown_fields(value, properties[key], f"{where}.{key}")
            elif isinstance(extra, dict):
                found += unknown_fields(value, extra, f"{where}.{key}")
            elif properties is not None or extra is False:
                found.append(f"{where}.{key}")
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            found += unknown_fields(item, schema["items"], f"{where}[{i}]")
    return found


def schema_errors(obj: dict) -> list[str]:
    """What the API server would refuse or drop: JSON-schema errors against the CRD's openAPIV3Schema (its
    int-or-string fields are anyOf integer/string, which a plain validator checks as written), unknown fields,
    and a name that is not a DNS label."""
    import jsonschema

    schema = crd_schema()
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(obj)]
    errors += [f"{path}: not in the schema" for path in unknown_fields(obj, schema)]
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", obj["metadata"]["name"]):
        errors.append(f"metadata.name {obj['metadata']['name']!r} is not a DNS-1035 label")
    return errors


def rendered(served: str | None, version: str, canary_percent: int) -> dict:
    """What deploy applies for `version` where `served` runs (None: nothing yet)."""
    canary = d.canary_traffic(served, version, canary_percent, None)
    serve = Serve(canary_percent=canary_percent)
    return d.render_inference_service(MODEL, version, serve, IMAGE, "mlflow-credentials", canary)


CASES = {
    "first deploy": (None, "1", 20, None),
    "canary over an older version": ("2", "3", 20, 20),
    "canary 0 over an older version": ("2", "3", 0, None),
}


@pytest.mark.parametrize("case", CASES)
def test_every_rendered_inference_service_validates_against_the_kserve_crd(case):
    served, version, share, expected = CASES[case]
    isvc = rendered(served, version, share)
    assert schema_errors(isvc) == []
    assert isvc["spec"]["predictor"].get("canaryTrafficPercent") == expected
    # KServe reads an explicit 0 as "all traffic back to the previous revision": never written
    assert isvc["spec"]["predictor"].get("canaryTrafficPercent") != 0


def test_the_schema_check_catches_what_the_api_server_would_refuse_or_drop():
    isvc = rendered(None, "1", 0)
    broken = copy.deepcopy(isvc)
    broken["spec"]["predictor"]["canaryTrafficPercent"] = "ten"
    broken["spec"]["predictor"]["containers"][0]["readinessProbe"]["httpGet"]["porrt"] = 8080
    broken["metadata"]["name"] = "Digits_Classifier"
    problems = schema_errors(broken)
    assert any(p.startswith("spec.predictor.canaryTrafficPercent: 'ten' is not of type 'integer'") for p in problems)
    assert ".spec.predictor.containers[0].readinessProbe.httpGet.porrt: not in the schema" in problems
    assert any("is not a DNS-1035 label" in p for p in problems)


def test_the_server_is_pinned_to_the_version_and_locked_down():
    serve = load_params(REPO / "params.yaml").serve
    isvc = d.render_inference_service(MODEL, "7", serve, IMAGE, "mlflow-credentials")
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert isvc["metadata"]["name"] == MODEL and isvc["metadata"]["namespace"] == serve.namespace
    predictor = isvc["spec"]["predictor"]
    [container] = predictor["containers"]
    argv = container["command"] + container["args"]
    assert argv == ["python", "-m", "components.serve", "--model", f"models:/{MODEL}/7"] + [
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
        "--max-request-bytes",
        str(serve.max_request_bytes),
    ]
    assert {"name": "HOME", "value": "/tmp"} in container["env"], "the read-only root: caches under the emptyDir"
    assert not [a for a in argv if "@" in a], "the version, never an alias: a restarted pod serves the same model"
    assert isvc["metadata"]["labels"]["twinline/model-version"] == predictor["labels"]["twinline/model-version"] == "7"
    assert isvc["metadata"]["annotations"]["twinline/model-uri"] == f"models:/{MODEL}/7"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/enable-prometheus-scraping"] == "true"
    assert isvc["metadata"]["annotations"]["prometheus.kserve.io/path"] == "/metrics"
    assert container["image"] == IMAGE and container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert predictor["automountServiceAccountToken"] is False
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    # /tmp, all the server writes, is the one writable place
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert predictor["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    # MLflow from the Secret, never in clear; user and password optional (a server without auth)
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert env == {
        key: {"name": "mlflow-credentials", "key": key, "optional": key != "MLFLOW_TRACKING_URI"}
        for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    }
    assert container["resources"] == {
        "requests": {"cpu": serve.resources.cpu_request, "memory": serve.resources.memory_request},
        "limits": {"cpu": serve.resources.cpu_limit, "memory": serve.resources.memory_limit},
    }
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (serve.min_replicas, serve.max_replicas)
    assert "canaryTrafficPercent" not in predictor
    with pytest.raises(ValueError, match="not a number"):
        d.render_inference_service(MODEL, "champion", serve, IMAGE, "mlflow-credentials")


def test_canary_rules():
    # (served, new, canary_percent, current) -> canaryTrafficPercent (None: left out, all traffic to the new one)
    table = {
        (None, "1", 20, None): None,  # first deploy: nothing to share with
        ("1", "2", 20, None): 20,  # an older version serves: the new one gets the canary share
        ("9", "10", 20, None): 20,  # versions compare as numbers
        ("1", "2", 0, None): None,  # 0: replace at once
        ("2", "2", 20, 20): 20,  # the same version again (a retry): the split stays
        ("2", "2", 20, None): None,
        ("2", "2", 0, 20): None,  # the same version with 0: promoted to all traffic
        ("3", "2", 20, None): None,  # a rollback replaces at once
    }
    for (served, new, share, current), expected in table.items():
        assert d.canary_traffic(served, new, share, current) == expected, (served, new, share, current)


def test_service_names_are_dns_labels_that_keep_model_names_apart():
    assert d.service_name("digits-classifier") == "digits-classifier"
    names = ["My_Model", "my.model", "my-model-", "9lives", "x" * 100, "a_" * 50, "A"]
    services = [d.service_name(n) for n in names]
    assert len(set(services)) == len(names)
    for service in services:
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", service) and len(service) <= d.MAX_NAME, service


def test_a_model_uri_is_a_version_or_an_alias():
    assert tracking.parse_model_uri("models:/m/3") == ("m", "3", None)
    assert tracking.parse_model_uri("models:/m.v2@champion") == ("m.v2", None, "champion")
    for bad in ("m@champion", "models:/m", "models:/m/latest", "runs:/abc/model", "models:/m/3/x"):
        with pytest.raises(UserError, match="write models:/NAME@ALIAS"):
            tracking.parse_model_uri(bad)


# -- apply and wait, against a stand-in for the Kubernetes API server -------------------------------------------


class StandInKubeApi:
    """Stands in for the Kubernetes API server: GET and server-side-apply PATCH of InferenceServices in one
    namespace, every request recorded as (method, path, query, headers, body). After a change, the object
    turns Ready after `ready_after` GETs (mode "ready"), reports PredictorReady False ("failing"), or is never
    reconciled at all ("never": its status stays that of the previous generation)."""

    def __init__(self, mode: str = "ready", ready_after: int = 2):
        self.mode, self.ready_after = mode, ready_after
        self.requests: list[tuple[str, str, dict, dict, dict | None]] = []
        self.objects: dict[str, dict] = {}
        self.pending: dict[str, int] = {}
        self.lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self, body: dict | None) -> tuple[str, dict]:
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                headers = {k.lower(): v for k, v in self.headers.items()}
                stand_in.requests.append((self.command, url.path, query, headers, body))
                return url.path, headers

            def do_GET(self):  # noqa: N802
                path, _ = self._record(None)
                with stand_in.lock:
                    code, body = stand_in.get(path)
                self._reply(code, body)

            def do_PATCH(self):  # noqa: N802
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                body = yaml.safe_load(raw)
                path, headers = self._record(body)
                with stand_in.lock:
                    code, reply = stand_in.apply(path, headers, body)
                self._reply(code, reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def path(self, name: str, namespace: str = NAMESPACE) -> str:
        return f"/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices/{name}"

    @staticmethod
    def not_found(message: str) -> tuple[int, dict]:
        return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404} | {
            "message": message
        }

    def get(self, path: str) -> tuple[int, dict]:
        if not path.startswith(f"/apis/serving.kserve.io/v1beta1/namespaces/{NAMESPACE}/inferenceservices/"):
            return self.not_found("the server could not find the requested resource")
        obj = self.objects.get(path)
        if obj is None:
            return self.not_found(f'inferenceservices.serving.kserve.io "{path.rsplit("/", 1)[1]}" not found')
        if path in self.pending:
            self.pending[path] -= 1
            if self.pending[path] <= 0:
                del self.pending[path]
                self.reconcile(obj)
        return 200, obj

    def reconcile(self, obj: dict) -> None:
        generation = obj["metadata"]["generation"]
        if self.mode == "never":
            return
        if self.mode == "ready":
            conditions = [{"type": t, "status": "True"} for t in ("IngressReady", "PredictorReady", "Ready")]
        else:
            failing = {
                "reason": "RevisionFailed",
                "message": 'Revision "digits-classifier-predictor-00002" failed with message: Back-off pulling image',
            }
            conditions = [
                {"type": "IngressReady", "status": "True"},
                {"type": "PredictorReady", "status": "False"} | failing,
                {"type": "Ready", "status": "False"} | failing,
            ]
        url = f"http://{obj['metadata']['name']}.{NAMESPACE}.example.com"
        obj["status"] = {"observedGeneration": generation, "conditions": conditions, "url": url}

    def apply(self, path: str, headers: dict, body: dict) -> tuple[int, dict]:
        if headers.get("content-type") != "application/apply-patch+yaml":
            return 415, {"kind": "Status", "code": 415, "message": f"not an apply patch: {headers.get('content-type')}"}
        if not path.startswith(f"/apis/serving.kserve.io/v1beta1/namespaces/{NAMESPACE}/"):
            return self.not_found(f'namespaces "{path.split("/")[5]}" not found')
        old = self.objects.get(path)
        obj = copy.deepcopy(body)
        generation = old["metadata"]["generation"] if old else 0
        obj["metadata"]["generation"] = generation + (old is None or old["spec"] != body["spec"])
        if old is not None and "status" in old:
            obj["status"] = old["status"]
        self.objects[path] = obj
        if obj["metadata"]["generation"] != generation:
            self.pending[path] = self.ready_after
        return 200, obj

    def seed(self, version: str) -> None:
        """An InferenceService that serves `version` of MODEL and is Ready, as a first deploy left it."""
        isvc = d.render_inference_service(MODEL, version, Serve(), IMAGE, "mlflow-credentials")
        isvc["metadata"]["generation"] = 1
        isvc["status"] = {
            "observedGeneration": 1,
            "conditions": [{"type": t, "status": "True"} for t in ("IngressReady", "PredictorReady", "Ready")],
        }
        self.objects[self.path(isvc["metadata"]["name"])] = isvc

    def patches(self) -> list[tuple[str, str, dict, dict, dict | None]]:
        return [r for r in self.requests if r[0] == "PATCH"]

    def __enter__(self) -> StandInKubeApi:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def write_kubeconfig(path: Path, server: str) -> Path:
    """A kubeconfig whose current context is the stand-in, with a bearer token, as `kubectl` would use it."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "stand-in", "cluster": {"server": server}}],
                "users": [{"name": "deployer", "user": {"token": TOKEN}}],
                "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "deployer"}}],
                "current-context": "stand-in",
            }
        )
    )
    return path


@pytest.fixture
def kubeconfig_for(tmp_path, monkeypatch):
    """Point the kubernetes client at a server through KUBECONFIG, never at an in-cluster account."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    def point(server: str) -> Path:
        path = write_kubeconfig(tmp_path / "kubeconfig", server)
        monkeypatch.setenv("KUBECONFIG", str(path))
        return path

    return point


def serve_with(**changes) -> Serve:
    return Serve.model_validate(Serve().model_dump() | changes)


def test_first_deploy_applies_by_server_side_apply_and_waits_for_ready_on_a_stand_in(kubeconfig_for):
    with StandInKubeApi(ready_after=2) as api:
        kubeconfig_for(api.url)
        result = d.deploy(MODEL, "1", serve_with(canary_percent=20), IMAGE, "mlflow-credentials", poll_s=0.05)
    path = api.path(MODEL)
    assert [(method, p) for method, p, *_ in api.requests] == [("GET", path), ("PATCH", path)] + [("GET", path)] * 2
    [(_, _, query, headers, body)] = api.patches()
    assert headers["content-type"] == "application/apply-patch+yaml"
    assert query == {"fieldManager": "twinline", "force": "true"}
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert all(r[3]["authorization"] == f"Bearer {TOKEN}" for r in api.requests)
    [container] = body["spec"]["predictor"]["containers"]
    assert container["args"][:2] == ["--model", f"models:/{MODEL}/1"]
    assert "canaryTrafficPercent" not in body["spec"]["predictor"], "nothing to share traffic with on a first deploy"
    assert result["canary_percent"] is None and result["previous_version"] is None
    assert result["url"] == f"http://{MODEL}.{NAMESPACE}.example.com"


def test_a_newer_version_gets_the_canary_share_and_a_rerun_with_0_promotes_it_on_a_stand_in(kubeconfig_for):
    with StandInKubeApi(ready_after=1) as api:
        kubeconfig_for(api.url)
        api.seed("2")
        serve = serve_with(canary_percent=25)
        result = d.deploy(MODEL, "3", serve, IMAGE, "mlflow-credentials", poll_s=0.05)
        assert (result["canary_percent"], result["previous_version"]) == (25, "2")
        d.deploy(MODEL, "3", serve, IMAGE, "mlflow-credentials", poll_s=0.05)  # a retry: the split stays
        d.deploy(MODEL, "3", serve, IMAGE, "mlflow-credentials", canary_percent=0, poll_s=0.05)  # promote
        d.deploy(MODEL, "2", serve, IMAGE, "mlflow-credentials", poll_s=0.05)  # rollback: at once
    bodies = [body for *_, body in api.patches()]
    assert [b["spec"]["predictor"]["containers"][0]["args"][1] for b in bodies] == [
        f"models:/{MODEL}/{v}" for v in ("3", "3", "3", "2")
    ]
    assert [b["spec"]["predictor"].get("canaryTrafficPercent") for b in bodies] == [25, 25, None, None]


@pytest.mark.parametrize("mode", ["failing", "never"])
def test_not_ready_in_time_is_one_line_naming_the_condition_on_a_stand_in(kubeconfig_for, mode):
    with StandInKubeApi(mode=mode, ready_after=1) as api:
        kubeconfig_for(api.url)
        api.seed("1")  # Ready, for generation 1: that must not count for the version applied now
        with pytest.raises(d.UserError) as failure:
            d.deploy(MODEL, "2", Serve(), IMAGE, "mlflow-credentials", timeout_s=0.5, poll_s=0.05)
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith(f"InferenceService {NAMESPACE}/{MODEL} is not Ready after 0.5 s: ")
    if mode == "failing":
        assert (
            'PredictorReady=False (RevisionFailed: Revision "digits-classifier-predictor-00002" failed with '
            "message: Back-off pulling image); Ready=False (RevisionFailed:" in message
        )
    else:
        assert "the KServe controller has not reconciled generation 2 yet (it saw 1)" in message
    assert message.endswith(f"`kubectl -n {NAMESPACE} describe inferenceservice {MODEL}` says more")


def test_an_inference_service_of_another_model_is_left_alone_on_a_stand_in(kubeconfig_for):
    with StandInKubeApi() as api:
        kubeconfig_for(api.url)
        api.seed("4")
        api.objects[api.path(MODEL)]["spec"]["predictor"]["containers"][0]["args"][1] = "models:/Digits_Classifier/4"
        with pytest.raises(d.UserError, match=r"exists and serves models:/Digits_Classifier/4, not digits-classifier"):
            d.deploy(MODEL, "5", Serve(), IMAGE, "mlflow-credentials", poll_s=0.05)
    assert api.patches() == []


# -- the CLI, on a real MLflow registry ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> str:
    """A real sqlite MLflow store with MODEL versions 1, 2 and 3, @champion on 2."""
    import mlflow

    root = tmp_path_factory.mktemp("registry")
    (root / "model").mkdir()
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    client.create_registered_model(MODEL)
    for _ in range(3):
        client.create_model_version(MODEL, str(root / "model"))
    client.set_registered_model_alias(MODEL, "champion", "2")
    return uri


def cli(capsys, monkeypatch, registry: str, *args: str) -> tuple[int, str, list[str]]:
    """pipelines.deploy's CLI in this process: (exit code, stdout, stderr lines without INFO logging)."""
    from components.errors import run_cli

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry)
    code = 0
    try:
        run_cli(d.main, ["--params", str(REPO / "params.yaml"), *args])
    except SystemExit as exit_info:
        code = int(exit_info.code or 0)
    out, err = capsys.readouterr()
    return code, out, [line for line in err.strip().splitlines() if not line.startswith(("INFO ", "WARNING "))]


def test_dry_run_prints_the_version_the_champion_alias_names(registry):
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry, "KUBECONFIG": "/nonexistent/kubeconfig"}
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.deploy", "--model", f"models:/{MODEL}@champion", "--dry-run"]
        + ["--canary", "10", "--namespace", "team-serving", "--image", IMAGE],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    isvc = yaml.safe_load(result.stdout)
    assert schema_errors(isvc) == []
    assert isvc["spec"]["predictor"]["containers"][0]["args"][:2] == ["--model", f"models:/{MODEL}/2"]
    assert isvc["metadata"]["namespace"] == "team-serving"
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert "@" not in json.dumps(isvc["spec"]).replace(IMAGE, "")


def test_the_cli_deploys_the_champion_on_a_stand_in(capsys, monkeypatch, registry, kubeconfig_for):
    with StandInKubeApi(ready_after=1) as api:
        kubeconfig_for(api.url)
        code, out, err = cli(capsys, monkeypatch, registry, "--model", f"models:/{MODEL}@champion", "--image", IMAGE)
    assert (code, err) == (0, [])
    assert out.strip() == (
        f"{NAMESPACE}/{MODEL}: models:/{MODEL}/2 is Ready with all traffic at http://{MODEL}.{NAMESPACE}.example.com"
    )
    [(_, _, _, _, body)] = api.patches()
    assert body["spec"]["predictor"]["containers"][0]["args"][1] == f"models:/{MODEL}/2"


BAD_INPUTS = {
    "unknown alias": (
        ["--model", f"models:/{MODEL}@staging"],
        f"error: registered model '{MODEL}' has no alias 'staging' in ",
    ),
    "unknown model": (["--model", "models:/nope@champion"], "error: registered model 'nope' has no alias 'champion'"),
    "unknown version": (["--model", f"models:/{MODEL}/9"], f"error: registered model '{MODEL}' has no version 9"),
    "not a model URI": (["--model", "runs:/abc/model"], "error: --model 'runs:/abc/model': write models:/NAME@ALIAS"),
    "bad namespace": (
        ["--model", f"models:/{MODEL}@champion", "--namespace", "Team_A"],
        "error: --namespace: 'Team_A' is not a Kubernetes namespace name",
    ),
    "canary above 100": (
        ["--model", f"models:/{MODEL}@champion", "--canary", "101"],
        "error: --canary 101: a share of the traffic in percent, 0 (replace at once) to 100",
    ),
    "bad image": (["--model", f"models:/{MODEL}@champion", "--image", "Not An Image"], "error: --image: "),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_and_contacts_no_cluster(capsys, monkeypatch, registry, kubeconfig_for, case):
    args, start = BAD_INPUTS[case]
    with StandInKubeApi() as api:
        kubeconfig_for(api.url)
        code, out, err = cli(capsys, monkeypatch, registry, *args)
    assert code == 1 and out == ""
    assert len(err) == 1 and err[0].startswith(start), err
    assert api.requests == []


def test_an_unreachable_api_server_is_one_line(capsys, monkeypatch, registry, kubeconfig_for):
    from servers import free_port

    server = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    kubeconfig_for(server)
    code, out, err = cli(capsys, monkeypatch, registry, "--model", f"models:/{MODEL}@champion")
    assert code == 1 and out == ""
    assert err == [
        f"error: Kubernetes API server {server} is not reachable (Connection refused); check KUBECONFIG and its "
        "current context"
    ]


def test_no_kubeconfig_is_one_line(capsys, monkeypatch, registry, kubeconfig_for, tmp_path):
    kubeconfig_for("http://127.0.0.1:9")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    code, _, err = cli(capsys, monkeypatch, registry, "--model", f"models:/{MODEL}@champion")
    assert code == 1 and len(err) == 1
    assert err[0].startswith("error: no Kubernetes configuration: not in a pod, and no usable kubeconfig")


# -- the pipeline's deploy condition, under kfp.local ----------------------------------------------------------


def test_kfp_local_deploys_a_promoted_version_and_skips_one_that_is_not_on_a_stand_in(tmp_path):
    """About 2 minutes on 2 cores. Two runs of the whole pipeline with deploy=True on one MLflow store and one
    stand-in API server: the first model is promoted and deployed (one apply, pinned to version 1); the
    second (1 epoch at a tiny learning rate, far below register.min_macro_f1) is registered as version 2,
    not promoted, and dsl.If skips deploy."""
    from conftest import make_project

    project = make_project(tmp_path / "project")
    env = {key: value for key, value in project.env.items() if key != "KUBERNETES_SERVICE_HOST"}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'kfp-mlflow' / 'mlflow.db'}"

    def run(out: str) -> dict:
        result = subprocess.run(
            [sys.executable, "-m", "pipelines.run_local", "--params", str(project.root / "params.yaml")]
            + ["--data-uri", str(project.root / "data" / "digits"), "--output-dir", str(tmp_path / out), "--deploy"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return json.loads((tmp_path / out / "registration.json").read_text())

    with StandInKubeApi(ready_after=1) as api:
        env["KUBECONFIG"] = str(write_kubeconfig(tmp_path / "kubeconfig", api.url))  # task subprocesses inherit it
        first = run("first")
        assert (first["version"], first["promoted"]) == ("1", True)
        [(_, path, query, headers, body)] = api.patches()
        assert path == api.path(MODEL) and query["fieldManager"] == "twinline"
        assert headers["content-type"] == "application/apply-patch+yaml"
        assert body["spec"]["predictor"]["containers"][0]["args"][1] == f"models:/{MODEL}/1"
        assert body["spec"]["predictor"]["containers"][0]["image"] == load_params(REPO / "params.yaml").kubeflow.image

        project.set_params({"train": {"epochs": 1, "lr": 1e-6}})
        second = run("second")
        assert (second["version"], second["promoted"]) == ("2", False)
        assert len(api.patches()) == 1, "a version that was not promoted is not deployed"
