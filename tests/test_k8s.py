"""k8s/: both kustomize overlays render, validate against the Kubernetes schema, meet the security
baseline (non-root, read-only root fs, no privilege escalation, no capabilities, RuntimeDefault
seccomp, requests and limits), differ as intended, and keep the Secret contract the pipeline uses;
and least privilege holds on a shared cluster (section 5): pipeline pods and the tracking stack in
separate namespaces, RBAC, network policies, Pod Security, no secret on a command line, digests.

Needs `kubectl` (its built-in kustomize) and the `kubernetes-validate` package, both offline. Missing
either one skips these tests locally, but fails them when CI=true.
"""

from __future__ import annotations

import base64
import fnmatch
import functools
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
OVERLAYS = ("local", "gpu-cluster")
TRACKING = "twinline"  # MLflow, PostgreSQL and their Secrets
PIPELINES = "twinline-pipelines"  # pipeline pods (service account pipeline-runner), mlflow-credentials
SERVING = "twinline-serving"  # KServe InferenceServices (pipelines/deploy.py), their mlflow-credentials
IN_CI = os.environ.get("CI", "").lower() == "true"

# Kubernetes versions whose bundled (offline) schemas every rendered object must validate against:
# the oldest version these manifests target, and the newest that kubernetes-validate ships.
MIN_K8S_VERSION = "1.30"

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}

# Containers allowed a writable root filesystem, with the reason. Keep it empty unless a program
# really cannot run read-only (and say so in a comment in its manifest as well).
WRITABLE_ROOT_FS: dict[tuple[str, str], str] = {}

PLACEHOLDER = "CHANGE_ME"
# Secret-template values that are not secret and may stay as they are.
NON_SECRET_VALUES = {
    "POSTGRES_USER": {"postgres"},
    "POSTGRES_DB": {"mlflow"},
    "MLFLOW_TRACKING_URI": {"http://mlflow.twinline.svc.cluster.local:5000"},
    "MLFLOW_TRACKING_USERNAME": {"pipeline", "serving"},
}
MLFLOW_CREDENTIALS_KEYS = {"MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}


def _missing(what: str) -> None:
    message = f"{what}; the k8s/ manifest tests need it"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: failing instead of skipping)", pytrace=False)
    pytest.skip(message)


@functools.cache
def _render(path: str) -> tuple[list[dict] | None, str]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None, "kubectl not found on PATH"
    result = subprocess.run([kubectl, "kustomize", str(K8S / path)], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize k8s/{path} failed ({result.returncode}):\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc], ""


def render(path: str) -> list[dict]:
    docs, why = _render(path)
    if docs is None:
        _missing(why)
    return docs


def ident(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def namespace_of(obj: dict) -> str | None:
    return obj["metadata"].get("namespace")


def find(docs: list[dict], kind: str, name: str, namespace: str | None = None) -> dict:
    matches = [
        d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name and namespace in (None, namespace_of(d))
    ]
    assert len(matches) == 1, f"expected exactly one {kind}/{name} (namespace {namespace}), found {len(matches)}"
    return matches[0]


def pod_spec(obj: dict) -> dict:
    if obj["kind"] == "Pod":
        return obj["spec"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def workloads(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] in WORKLOAD_KINDS]


def containers(obj: dict) -> list[tuple[str, dict]]:
    """(`init container NAME` | `container NAME`, spec) for every container of the pod template."""
    spec = pod_spec(obj)
    return [(f"init container {c['name']}", c) for c in spec.get("initContainers", [])] + [
        (f"container {c['name']}", c) for c in spec.get("containers", [])
    ]


def container(obj: dict, name: str) -> dict:
    return next(c for c in pod_spec(obj)["containers"] if c["name"] == name)


_SUFFIXES = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity ("250m", "1", "512Mi", "10Gi") as a number."""
    match = re.fullmatch(r"([0-9.]+)(m|k|M|G|T|Ki|Mi|Gi|Ti)?", str(value))
    assert match, f"unparseable quantity {value!r}"
    return float(match.group(1)) * _SUFFIXES.get(match.group(2) or "", 1)


def host_allowed(allowed: list[str], host: str) -> bool:
    """MLflow 3's Host-header check (mlflow.server.security_utils.is_allowed_host_header): exact match,
    or fnmatch for patterns with '*'. The Host header includes the port unless it is 80."""
    return "*" in allowed or any(fnmatch.fnmatch(host, a) if "*" in a else host == a for a in allowed)


def arg_value(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} missing from the mlflow server args {args}"
    return args[args.index(flag) + 1]


def secret_items(secret: dict) -> dict[str, str]:
    items = dict(secret.get("stringData") or {})
    for key, value in (secret.get("data") or {}).items():
        items[key] = base64.b64decode(value).decode()
    return items


# -- 1. rendering ------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_whole_stack(overlay):
    docs = render(f"overlays/{overlay}")
    placed = {(ident(d), namespace_of(d)) for d in docs}
    expected = {
        ("Namespace/twinline", None),
        ("Namespace/twinline-pipelines", None),
        ("Namespace/twinline-serving", None),
    }
    expected |= {
        (name, TRACKING)
        for name in (
            "Deployment/mlflow",
            "Service/mlflow",
            "PersistentVolumeClaim/mlflow-artifacts",
            "StatefulSet/postgres",
            "Service/postgres",
            "ConfigMap/postgres-initdb",
            "NetworkPolicy/default-deny",
            "NetworkPolicy/postgres-from-mlflow",
            "NetworkPolicy/mlflow-from-pipelines",
            "NetworkPolicy/mlflow-from-serving",
            "NetworkPolicy/mlflow-egress",
        )
    }
    expected |= {
        (name, PIPELINES)
        for name in (
            "ServiceAccount/pipeline-runner",
            "Role/pipeline-runner",
            "RoleBinding/pipeline-runner",
            "NetworkPolicy/default-deny",
            "NetworkPolicy/egress-dns",
            "NetworkPolicy/egress-mlflow",
            "NetworkPolicy/train-nodes",
            "PersistentVolumeClaim/twinline-shared",
        )
    }
    expected |= {
        (name, SERVING)
        for name in (
            "Role/inferenceservice-deployer",
            "RoleBinding/pipeline-runner-deploys",
            "NetworkPolicy/default-deny",
            "NetworkPolicy/egress-dns",
            "NetworkPolicy/egress-mlflow",
            "NetworkPolicy/ingress-from-serving-layer",
        )
    }
    assert expected <= placed, f"k8s/overlays/{overlay} lacks {sorted(expected - placed, key=str)}"
    assert len(placed) == len(docs), f"k8s/overlays/{overlay}: duplicate objects"
    for obj in docs:
        if obj["kind"] not in ("Namespace", *CLUSTER_RBAC):
            assert namespace_of(obj) in (TRACKING, PIPELINES, SERVING), f"{ident(obj)} is in {namespace_of(obj)}"
    # Real credentials are created with kubectl; `apply -k` must never overwrite them with placeholders.
    secrets = [ident(d) for d in docs if d["kind"] == "Secret"]
    assert not secrets, f"k8s/overlays/{overlay} renders {secrets}: Secrets belong in k8s/secret-templates only"


def test_secret_templates_render():
    docs = render("secret-templates")
    assert {(ident(d), namespace_of(d)) for d in docs} == {
        ("Secret/postgres-credentials", TRACKING),
        ("Secret/mlflow-db", TRACKING),
        ("Secret/mlflow-server", TRACKING),
        ("Secret/mlflow-credentials", PIPELINES),
        ("Secret/mlflow-credentials", SERVING),
    }


# -- 2. schema --------------------------------------------------------------------------------------


@functools.cache
def _schema_versions() -> tuple[str, ...]:
    try:
        import kubernetes_validate
        from kubernetes_validate.utils import all_versions
    except ImportError:
        _missing("the kubernetes-validate package is not installed (pip install kubernetes-validate)")
    from packaging.version import Version

    shipped = all_versions()  # read from the package's bundled schemas, no network
    usable = [v for v in shipped if Version(v) >= Version(MIN_K8S_VERSION)]
    assert usable, (
        f"kubernetes-validate {kubernetes_validate.__version__} ships no schema >= {MIN_K8S_VERSION}: {shipped}"
    )
    return tuple(dict.fromkeys((usable[0], usable[-1])))


@pytest.mark.parametrize("path", [f"overlays/{o}" for o in OVERLAYS] + ["secret-templates"])
def test_every_object_validates_against_the_kubernetes_schema(path):
    docs = render(path)
    versions = _schema_versions()
    import kubernetes_validate

    errors = []
    for version in versions:
        for obj in docs:
            try:
                validated = kubernetes_validate.validate(obj, version, strict=True)
                assert validated == ".".join(version.split(".")[:2]), f"validated against {validated}, not {version}"
            except kubernetes_validate.ValidationError as e:
                where = ".".join(str(p) for p in e.path)
                errors.append(f"{ident(obj)} (k8s {version}): {where}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                errors.append(f"{ident(obj)}: {e.message}")
    assert not errors, f"k8s/{path}: schema errors:\n" + "\n".join(errors)


# -- 3. security baseline ------------------------------------------------------------------------------


def security_violations(obj: dict) -> list[str]:
    spec = pod_spec(obj)
    pod_sc = spec.get("securityContext") or {}
    problems = []
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            problems.append(f"{flag} is set")
    problems += [f"volume {v['name']} is a hostPath" for v in spec.get("volumes", []) if "hostPath" in v]
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod securityContext.runAsUser is 0")
    for label, c in containers(obj):
        sc = c.get("securityContext") or {}

        def effective(key):
            return sc.get(key, pod_sc.get(key))  # noqa: B023 - called within this iteration only

        def bad(message):
            problems.append(f"{label}: {message}")  # noqa: B023 - called within this iteration only

        if effective("runAsNonRoot") is not True:
            bad("runAsNonRoot is not true")
        if effective("runAsUser") == 0:
            bad("runAsUser is 0")
        if sc.get("privileged"):
            bad("privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad("allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True and (ident(obj), c["name"]) not in WRITABLE_ROOT_FS:
            bad("readOnlyRootFilesystem is not true")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            bad("capabilities.drop lacks ALL")
        if capabilities.get("add"):
            bad(f"capabilities.add {capabilities['add']}")
        if (effective("seccompProfile") or {}).get("type") != "RuntimeDefault":
            bad("seccompProfile.type is not RuntimeDefault")
        resources = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in (resources.get(kind) or {}):
                    bad(f"no {resource} {kind[:-1]}")
        for resource in ("cpu", "memory"):
            request = (resources.get("requests") or {}).get(resource)
            limit = (resources.get("limits") or {}).get(resource)
            if request and limit and quantity(request) > quantity(limit):
                bad(f"{resource} request {request} exceeds its limit {limit}")
    return [f"{ident(obj)}: {p}" for p in problems]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_meets_the_security_baseline(overlay):
    docs = render(f"overlays/{overlay}")
    found = workloads(docs)
    assert {ident(w) for w in found} >= {"Deployment/mlflow", "StatefulSet/postgres"}, "workloads not found"
    problems = [p for w in found for p in security_violations(w)]
    assert not problems, f"k8s/overlays/{overlay}:\n" + "\n".join(problems)


def test_the_security_check_catches_violations():
    """The walker must flag each missing setting, naming the object and container."""
    mlflow = find(render("overlays/local"), "Deployment", "mlflow")
    assert security_violations(mlflow) == []

    def broken(edit) -> list[str]:
        import copy

        obj = copy.deepcopy(mlflow)
        edit(pod_spec(obj))
        return security_violations(obj)

    init_sc = lambda s: s["initContainers"][0]["securityContext"]  # noqa: E731
    main = lambda s: s["containers"][0]  # noqa: E731
    cases = {
        "runAsNonRoot is not true": lambda s: (
            s["securityContext"].pop("runAsNonRoot"),
            init_sc(s).pop("runAsNonRoot"),
        ),
        "readOnlyRootFilesystem is not true": lambda s: main(s)["securityContext"].pop("readOnlyRootFilesystem"),
        "allowPrivilegeEscalation is not false": lambda s: init_sc(s).update(allowPrivilegeEscalation=True),
        "capabilities.drop lacks ALL": lambda s: main(s)["securityContext"]["capabilities"].update(drop=["NET_RAW"]),
        "seccompProfile.type is not RuntimeDefault": lambda s: (
            s["securityContext"].pop("seccompProfile"),
            init_sc(s).pop("seccompProfile"),
        ),
        "no memory limit": lambda s: s["initContainers"][0]["resources"]["limits"].pop("memory"),
        "no cpu request": lambda s: main(s)["resources"]["requests"].pop("cpu"),
    }
    for expected, edit in cases.items():
        problems = broken(edit)
        assert problems and all(p.startswith("Deployment/mlflow: ") for p in problems), (expected, problems)
        assert any(expected in p for p in problems), (expected, problems)
        assert all("container" in p for p in problems), problems


# -- 4. contracts and overlay differences -------------------------------------------------------------


def test_mlflow_credentials_secret_contract():
    docs = render("secret-templates")
    creds = secret_items(find(docs, "Secret", "mlflow-credentials", PIPELINES))
    assert set(creds) == MLFLOW_CREDENTIALS_KEYS
    url = urlsplit(creds["MLFLOW_TRACKING_URI"])
    assert (url.scheme, url.hostname, url.port) == ("http", f"mlflow.{TRACKING}.svc.cluster.local", 5000)
    # The pipeline logs in as its own MLflow user: the admin password stays with the server.
    assert creds["MLFLOW_TRACKING_USERNAME"] != "admin"
    # The model servers read the same server as yet another user (read-only): never the pipeline's password.
    serving = secret_items(find(docs, "Secret", "mlflow-credentials", SERVING))
    assert set(serving) == MLFLOW_CREDENTIALS_KEYS
    assert serving["MLFLOW_TRACKING_URI"] == creds["MLFLOW_TRACKING_URI"]
    assert serving["MLFLOW_TRACKING_USERNAME"] not in ("admin", creds["MLFLOW_TRACKING_USERNAME"])
    postgres = secret_items(find(docs, "Secret", "postgres-credentials", TRACKING))
    assert set(postgres) == {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
    assert postgres["POSTGRES_USER"] != "mlflow", "the superuser must not be the role MLflow logs in as"
    assert set(secret_items(find(docs, "Secret", "mlflow-db", TRACKING))) == {"MLFLOW_DB_PASSWORD"}
    server = secret_items(find(docs, "Secret", "mlflow-server", TRACKING))
    assert set(server) == {"MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD"}


@pytest.mark.parametrize("path", [f"overlays/{o}" for o in OVERLAYS] + ["secret-templates"])
def test_secrets_hold_only_placeholders(path):
    problems = []
    for secret in (d for d in render(path) if d["kind"] == "Secret"):
        for key, value in secret_items(secret).items():
            where = f"{ident(secret)} {key}"
            password = urlsplit(value).password if "://" in value else None
            if password is not None and password != PLACEHOLDER:
                problems.append(f"{where}: URL password is not {PLACEHOLDER}")
            elif value != PLACEHOLDER and password is None and value not in NON_SECRET_VALUES.get(key, set()):
                problems.append(f"{where}: {value!r} is neither {PLACEHOLDER} nor a known non-secret default")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_secret_reference_is_in_the_templates(overlay):
    # A pod reads Secrets of its own namespace only: the template must be in the workload's namespace.
    templates = {(namespace_of(d), d["metadata"]["name"]): set(secret_items(d)) for d in render("secret-templates")}
    missing = []
    for w in workloads(render(f"overlays/{overlay}")):
        for label, c in containers(w):
            for env in c.get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref["key"] not in templates.get((namespace_of(w), ref["name"]), set()):
                    missing.append(f"{ident(w)} {label}: {ref['name']}/{ref['key']}")
            for src in c.get("envFrom", []):
                if "secretRef" in src and (namespace_of(w), src["secretRef"]["name"]) not in templates:
                    missing.append(f"{ident(w)} {label}: {src['secretRef']['name']}")
    assert not missing, "referenced but not in k8s/secret-templates:\n" + "\n".join(missing)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflow_server_service_and_flags(overlay):
    docs = render(f"overlays/{overlay}")
    service = find(docs, "Service", "mlflow")
    deployment = find(docs, "Deployment", "mlflow")
    [port] = service["spec"]["ports"]
    assert port["port"] == 5000
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    server = container(deployment, "mlflow")
    ports = {p.get("name"): p["containerPort"] for p in server["ports"]}
    assert ports.get(port["targetPort"], port["targetPort"]) == 5000

    args = server["args"]
    assert arg_value(args, "--host") == "0.0.0.0" and arg_value(args, "--port") == "5000"
    assert "--backend-store-uri" not in args, "mlflow server reads it from MLFLOW_BACKEND_STORE_URI"
    assert arg_value(args, "--app-name") == "basic-auth"
    assert "--serve-artifacts" in args
    destination = arg_value(args, "--artifacts-destination")
    assert destination in {m["mountPath"] for m in server["volumeMounts"]}, (
        "artifact destination is not a mounted volume"
    )

    allowed = arg_value(args, "--allowed-hosts").split(",")
    creds = secret_items(find(render("secret-templates"), "Secret", "mlflow-credentials", PIPELINES))
    tracking_host = urlsplit(creds["MLFLOW_TRACKING_URI"]).netloc  # what the pipeline's client sends as Host
    for host in ("mlflow", f"mlflow.{TRACKING}", f"mlflow.{TRACKING}.svc", f"mlflow.{TRACKING}.svc.cluster.local"):
        assert host in allowed, f"--allowed-hosts lacks {host}"
        assert host_allowed(allowed, f"{host}:5000"), f"--allowed-hosts rejects {host}:5000"
    assert host_allowed(allowed, tracking_host)
    assert host_allowed(allowed, "localhost:5000") and host_allowed(allowed, "127.0.0.1:8080")  # port-forward
    assert not host_allowed(allowed, "attacker.example:5000")

    env = {e["name"]: e for e in server["env"]}
    assert env["MLFLOW_DISABLE_TELEMETRY"]["value"] == "true"
    for name in ("MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-server", "key": name}
    # MLflow's own database role; its password reaches libpq as PGPASSWORD, not inside the URI.
    backend = urlsplit(env["MLFLOW_BACKEND_STORE_URI"]["value"])
    # the image has psycopg2 only; SQLAlchemy 2.1 maps postgresql:// to psycopg 3
    assert backend.scheme == "postgresql+psycopg2"
    assert (backend.username, backend.password, backend.hostname, backend.port, backend.path) == (
        "mlflow",
        None,
        "postgres",
        5432,
        "/mlflow",
    )
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-db", "key": "MLFLOW_DB_PASSWORD"}
    for probe in ("readinessProbe", "livenessProbe"):
        get = server[probe]["httpGet"]
        assert get["path"] == "/health" and ports.get(get["port"], get["port"]) == 5000, probe


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_postgres_statefulset(overlay):
    docs = render(f"overlays/{overlay}")
    sts = find(docs, "StatefulSet", "postgres")
    service = find(docs, "Service", "postgres")
    assert service["spec"]["clusterIP"] == "None" and sts["spec"]["serviceName"] == "postgres"
    assert [p["port"] for p in service["spec"]["ports"]] == [5432]
    pg = container(sts, "postgres")
    assert pg["image"].startswith("postgres:16@sha256:")
    assert pod_spec(sts)["securityContext"]["runAsUser"] == 999
    env = {e["name"]: e for e in pg["env"]}
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    data_mount = next(m["mountPath"] for m in pg["volumeMounts"] if m["name"] in claims)
    assert env["PGDATA"]["value"].startswith(data_mount + "/"), "PGDATA must be inside the volumeClaimTemplate"
    for probe in ("readinessProbe", "livenessProbe"):
        assert "pg_isready" in " ".join(pg[probe]["exec"]["command"]), probe
    writable = {m["mountPath"] for m in pg["volumeMounts"]}
    assert {"/var/run/postgresql", "/tmp"} <= writable, "read-only root fs needs writable socket dir and /tmp"

    # MLflow's role is created on first start by a script from a ConfigMap, its password read from
    # the environment (psql \getenv): never written in the script or passed as an argument.
    assert env["MLFLOW_DB_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-db", "key": "MLFLOW_DB_PASSWORD"}
    for name in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "postgres-credentials", "key": name}
    mount = next(m for m in pg["volumeMounts"] if m["mountPath"] == "/docker-entrypoint-initdb.d")
    volume = next(v for v in pod_spec(sts)["volumes"] if v["name"] == mount["name"])
    [script] = find(docs, "ConfigMap", volume["configMap"]["name"], TRACKING)["data"].values()
    assert "\\getenv mlflow_password MLFLOW_DB_PASSWORD" in script
    assert re.search(r"^CREATE ROLE mlflow LOGIN NOSUPERUSER .*PASSWORD :'mlflow_password';$", script, re.M)
    assert 'ALTER DATABASE :"DBNAME" OWNER TO mlflow;' in script


def _resources(docs: list[dict]) -> dict[tuple[str, str, str], float]:
    out = {}
    for w in workloads(docs):
        for label, c in containers(w):
            for kind in ("requests", "limits"):
                for resource, value in c["resources"][kind].items():
                    out[(f"{ident(w)} {label}", kind, resource)] = quantity(value)
    return out


def _storage(docs: list[dict]) -> dict[str, float]:
    sizes = {
        f"PVC/{d['metadata']['name']}": quantity(d["spec"]["resources"]["requests"]["storage"])
        for d in docs
        if d["kind"] == "PersistentVolumeClaim"
    }
    for sts in (d for d in docs if d["kind"] == "StatefulSet"):
        for t in sts["spec"].get("volumeClaimTemplates", []):
            sizes[f"{ident(sts)}/{t['metadata']['name']}"] = quantity(t["spec"]["resources"]["requests"]["storage"])
    return sizes


def test_gpu_cluster_overlay_is_bigger_than_local():
    local, gpu = render("overlays/local"), render("overlays/gpu-cluster")
    local_res, gpu_res = _resources(local), _resources(gpu)
    assert local_res.keys() == gpu_res.keys()
    smaller = [f"{k}: gpu-cluster {gpu_res[k]} < local {v}" for k, v in local_res.items() if gpu_res[k] < v]
    assert not smaller, "\n".join(smaller)
    for main in ("Deployment/mlflow container mlflow", "StatefulSet/postgres container postgres"):
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                key = (main, kind, resource)
                assert gpu_res[key] > local_res[key], f"{key} is not larger in gpu-cluster"
    local_disk, gpu_disk = _storage(local), _storage(gpu)
    assert local_disk.keys() == gpu_disk.keys()
    assert all(gpu_disk[k] > v for k, v in local_disk.items()), (local_disk, gpu_disk)

    def env(docs, name):
        env = container(find(docs, "Deployment", "mlflow"), "mlflow")["env"]
        return next(e["value"] for e in env if e["name"] == name)

    assert int(env(gpu, "MLFLOW_WORKERS")) > int(env(local, "MLFLOW_WORKERS"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflow_replicas_fit_the_artifact_volume(overlay):
    """More than one replica needs a ReadWriteMany artifact volume and may roll; one RWO volume must Recreate."""
    docs = render(f"overlays/{overlay}")
    deployment = find(docs, "Deployment", "mlflow")
    modes = find(docs, "PersistentVolumeClaim", "mlflow-artifacts")["spec"]["accessModes"]
    if deployment["spec"]["replicas"] > 1:
        assert modes == ["ReadWriteMany"]
    elif modes == ["ReadWriteOnce"]:
        assert deployment["spec"]["strategy"]["type"] == "Recreate"


def test_overlays_differ_as_intended():
    local, gpu = render("overlays/local"), render("overlays/gpu-cluster")
    assert find(local, "Deployment", "mlflow")["spec"]["replicas"] == 1
    assert find(gpu, "Deployment", "mlflow")["spec"]["replicas"] >= 2
    assert find(local, "Service", "mlflow")["spec"].get("type", "ClusterIP") == "ClusterIP"  # port-forward
    assert "PodDisruptionBudget/mlflow" in {ident(d) for d in gpu}
    assert "PodDisruptionBudget/mlflow" not in {ident(d) for d in local}
    for docs in (local, gpu):  # storage class left to the cluster default
        assert all("storageClassName" not in d["spec"] for d in docs if d["kind"] == "PersistentVolumeClaim")
    # gpu-cluster keeps the CPU-only tracking stack off GPU nodes; local has no such constraint.
    for name in (("Deployment", "mlflow"), ("StatefulSet", "postgres")):
        terms = pod_spec(find(gpu, *name))["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]["nodeSelectorTerms"]
        assert all(
            {"key": "nvidia.com/gpu.present", "operator": "NotIn", "values": ["true"]} in t["matchExpressions"]
            for t in terms
        ), name
        assert "affinity" not in pod_spec(find(local, *name))
    # local runs the image loaded into kind/minikube; gpu-cluster pulls it from a registry.
    assert container(find(local, "Deployment", "mlflow"), "mlflow")["image"].startswith("twinline/mlflow:dev@")
    assert container(find(gpu, "Deployment", "mlflow"), "mlflow")["image"].split("@")[0].count("/") >= 2


# -- 5. least privilege on a shared cluster ---------------------------------------------------------

# Everything pipeline-runner may do, per namespace: nothing in the tracking namespace (creating a pod
# there would read every Secret there). Exact: a new grant must be added here on purpose.
PIPELINE_RUNNER_GRANTS = {
    PIPELINES: {("", "secrets", "get", "mlflow-credentials")}
    | {("", "pods", verb, "*") for verb in ("create", "get", "list", "watch", "patch", "delete")}
    | {("", resource, verb, "*") for resource in ("pods/log", "configmaps") for verb in ("get", "list", "watch")}
    | {("argoproj.io", "workflowtaskresults", verb, "*") for verb in ("create", "patch")}
    # the multi-node train task: its TrainJob, and the runtime it names (the SDK looks here first)
    | {("trainer.kubeflow.org", "trainjobs", verb, "*") for verb in ("create", "get", "list", "watch", "delete")}
    | {("trainer.kubeflow.org", "trainingruntimes", verb, "*") for verb in ("get", "list")},
    # the deploy task: InferenceServices only (KServe's controller creates the pods, with its own identity)
    SERVING: {
        ("serving.kserve.io", "inferenceservices", verb, "*")
        for verb in ("get", "list", "watch", "create", "patch", "update", "delete")
    },
}
# The only cluster-wide grant: reading Trainer's ClusterTrainingRuntimes (torch-distributed), which hold no secrets.
CLUSTER_RBAC = ("ClusterRole", "ClusterRoleBinding")
PIPELINE_RUNNER_CLUSTER_GRANTS = {("trainer.kubeflow.org", "clustertrainingruntimes", verb) for verb in ("get", "list")}
DIGEST = re.compile(r"[a-z0-9][a-z0-9._/-]*(:[\w.-]+)?@sha256:[0-9a-f]{64}")
PLACEHOLDER_DIGEST = "sha256:" + "0" * 64  # our own image: its digest is known only once it is built
OWN_IMAGE = "twinline/mlflow"
DNS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}


def tcp(port: int) -> dict:
    return {"protocol": "TCP", "port": port}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_namespace_enforces_pod_security_restricted(overlay):
    docs = render(f"overlays/{overlay}")
    for namespace in (TRACKING, PIPELINES, SERVING):
        labels = find(docs, "Namespace", namespace)["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted", namespace


def rbac_grants(docs: list[dict], namespace: str, service_account: str) -> dict[str, set[tuple]]:
    """{namespace: {(apiGroup, resource, verb, resourceName or *)}} granted to a service account by Roles."""
    subject = {"kind": "ServiceAccount", "name": service_account, "namespace": namespace}
    grants: dict[str, set[tuple]] = {}
    for binding in (d for d in docs if d["kind"] == "RoleBinding" and subject in d.get("subjects", [])):
        role = find(docs, binding["roleRef"]["kind"], binding["roleRef"]["name"], namespace_of(binding))
        for rule in role["rules"]:
            grants.setdefault(namespace_of(binding), set()).update(
                (group, resource, verb, name)
                for group in rule["apiGroups"]
                for resource in rule["resources"]
                for verb in rule["verbs"]
                for name in rule.get("resourceNames") or ["*"]
            )
    return grants


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pipeline_runner_rbac_per_namespace(overlay):
    docs = render(f"overlays/{overlay}")
    assert rbac_grants(docs, PIPELINES, "pipeline-runner") == PIPELINE_RUNNER_GRANTS
    subject = {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": PIPELINES}
    bindings = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert all(b["subjects"] == [subject] for b in bindings), "cluster-wide, pipeline-runner only"
    cluster_grants = {
        (group, resource, verb)
        for binding in bindings
        for rule in find(docs, "ClusterRole", binding["roleRef"]["name"])["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert cluster_grants == PIPELINE_RUNNER_CLUSTER_GRANTS
    in_tracking = [ident(d) for d in docs if d["kind"] in ("Role", "RoleBinding") and namespace_of(d) == TRACKING]
    assert in_tracking == [], "the tracking namespace grants nobody anything"
    # A binding names identities of its own namespace, except the one that lets the pipeline's deploy task
    # manage InferenceServices in the serving namespace (and nothing else, as PIPELINE_RUNNER_GRANTS says).
    for binding in (d for d in docs if d["kind"] == "RoleBinding"):
        if (namespace_of(binding), binding["metadata"]["name"]) == (SERVING, "pipeline-runner-deploys"):
            assert binding["subjects"] == [
                {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": PIPELINES}
            ]
            continue
        assert {s.get("namespace") for s in binding["subjects"]} == {namespace_of(binding)}, ident(binding)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_secret_is_read_by_its_owners_only(overlay):
    readers: dict[tuple[str, str], set[str]] = {}
    for w in workloads(render(f"overlays/{overlay}")):
        for _, c in containers(w):
            for env in c.get("env", []):
                if ref := (env.get("valueFrom") or {}).get("secretKeyRef"):
                    readers.setdefault((namespace_of(w), ref["name"]), set()).add(ident(w))
            assert not [s for s in c.get("envFrom", []) if "secretRef" in s], f"{ident(w)}: envFrom a whole Secret"
    # The superuser's password stays with PostgreSQL; the admin password with the MLflow server.
    assert readers == {
        (TRACKING, "postgres-credentials"): {"StatefulSet/postgres"},
        (TRACKING, "mlflow-db"): {"StatefulSet/postgres", "Deployment/mlflow"},
        (TRACKING, "mlflow-server"): {"Deployment/mlflow"},
    }


def ingress_and_egress(docs: list[dict], namespace: str, pod_labels: dict) -> tuple[list[dict], list[dict]]:
    """The ingress and egress rules of every NetworkPolicy in `namespace` that selects pods with these labels."""
    ingress, egress = [], []
    for policy in (d for d in docs if d["kind"] == "NetworkPolicy" and namespace_of(d) == namespace):
        selector = policy["spec"]["podSelector"]
        assert "matchExpressions" not in selector, f"{ident(policy)}: extend this helper for matchExpressions"
        if (selector.get("matchLabels") or {}).items() <= pod_labels.items():
            types = policy["spec"]["policyTypes"]
            ingress += policy["spec"].get("ingress", []) if "Ingress" in types else []
            egress += policy["spec"].get("egress", []) if "Egress" in types else []
    return ingress, egress


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_only_the_needed_paths(overlay):
    docs = render(f"overlays/{overlay}")
    for namespace in (TRACKING, PIPELINES, SERVING):
        specs = [d["spec"] for d in docs if d["kind"] == "NetworkPolicy" and namespace_of(d) == namespace]
        assert {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]} in specs, f"{namespace}: no default deny"

    def labels(kind, name):
        return find(docs, kind, name, TRACKING)["spec"]["template"]["metadata"]["labels"]

    mlflow = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow"}}}
    postgres = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "postgres"}}}
    # PostgreSQL: from the MLflow pods of its own namespace only; it sends nothing.
    assert ingress_and_egress(docs, TRACKING, labels("StatefulSet", "postgres")) == (
        [{"from": [mlflow], "ports": [tcp(5432)]}],
        [],
    )
    # MLflow: from the pipeline and serving namespaces (by their immutable name labels) only; to DNS and
    # PostgreSQL.
    from_pipelines = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": PIPELINES}}}
    from_serving = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": SERVING}}}
    ingress, egress = ingress_and_egress(docs, TRACKING, labels("Deployment", "mlflow"))
    assert ingress == [{"from": [from_pipelines], "ports": [tcp(5000)]}, {"from": [from_serving], "ports": [tcp(5000)]}]
    assert [r["to"] for r in egress] == [[DNS], [postgres]]
    assert egress[1]["ports"] == [tcp(5432)]

    # Pipeline pods (any labels): no ingress; egress only on named ports, to MLflow but nothing else
    # of the tracking namespace, and never to private or link-local addresses on the data-source rule.
    ingress, egress = ingress_and_egress(docs, PIPELINES, {})
    assert ingress == []
    assert all(rule.get("ports") for rule in egress), "an egress rule without ports allows every port"
    assert {"to": [DNS], "ports": [{"protocol": "UDP", "port": 53}, tcp(53)]} in egress
    to_tracking = [
        rule
        for rule in egress
        for peer in rule["to"]
        if peer.get("namespaceSelector", {}).get("matchLabels") == {"kubernetes.io/metadata.name": TRACKING}
    ]
    assert to_tracking == [
        {
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": TRACKING}}, **mlflow}],
            "ports": [tcp(5000)],
        }
    ]
    assert not [r for r in egress if tcp(5432) in r["ports"]], "pipeline pods never reach PostgreSQL"
    for block in (peer["ipBlock"] for rule in egress for peer in rule["to"] if "ipBlock" in peer):
        if block["cidr"] == "0.0.0.0/0":
            assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(block["except"])

    # The nodes of a multi-node TrainJob (labelled by pipelines/trainjob.py): each other, on any port, and
    # no one else; they send DNS and the pipeline pods' egress besides.
    from pipelines.trainjob import NODE_LABELS

    component = NODE_LABELS["app.kubernetes.io/component"]
    nodes = {"podSelector": {"matchLabels": {"app.kubernetes.io/component": component}}}
    ingress, egress = ingress_and_egress(docs, PIPELINES, NODE_LABELS)
    assert ingress == [{"from": [nodes]}]
    assert {"to": [nodes]} in egress and [r for r in egress if "ports" not in r] == [{"to": [nodes]}]

    # Model servers (KServe labels its predictor pods so): requests from the serving layer only, on the
    # queue-proxy's and the server's ports; they send only DNS and MLflow traffic (to fetch their model).
    predictor = {"serving.kserve.io/inferenceservice": "digits-classifier", "component": "predictor"}
    ingress, egress = ingress_and_egress(docs, SERVING, predictor)
    layer = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
        for ns in ("knative-serving", "istio-system")
    ]
    assert ingress == [{"from": layer, "ports": [tcp(p) for p in (8012, 8013, 9090, 8080)]}]
    assert egress == [
        {"to": [DNS], "ports": [{"protocol": "UDP", "port": 53}, tcp(53)]},
        {
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": TRACKING}}, **mlflow}],
            "ports": [tcp(5000)],
        },
    ]


def test_the_inference_service_deploy_renders_fits_the_serving_namespace():
    """pipelines/deploy.py's predictor meets this baseline, reads only the serving namespace's Secret as the
    templates define it, puts no secret on its command line, and lives where the Role and policies are."""
    from components.params import load_params
    from pipelines.deploy import render_inference_service

    params = load_params(REPO / "params.yaml")
    isvc = render_inference_service(
        "digits-classifier", "3", params.serve, params.kubeflow.image, params.kubeflow.mlflow_secret
    )
    assert isvc["metadata"]["namespace"] == params.serve.namespace == SERVING
    pod = {"kind": "Pod", "metadata": {"name": "predictor", "namespace": SERVING}, "spec": isvc["spec"]["predictor"]}
    assert security_violations(pod) == []
    assert command_line_leaks(pod) == []
    templates = {(namespace_of(t), t["metadata"]["name"]): set(secret_items(t)) for t in render("secret-templates")}
    for _, c in containers(pod):
        for env in c["env"]:
            if "valueFrom" not in env:  # a plain value (HOME)
                continue
            ref = env["valueFrom"]["secretKeyRef"]
            assert ref["key"] in templates[(SERVING, ref["name"])], ref


def command_line_leaks(obj: dict) -> list[str]:
    """Secrets that would end up in a process's argv (readable in /proc/<pid>/cmdline and in the pod
    spec): a secret-backed env var expanded by the kubelet ($(VAR)) or by a shell ($VAR, ${VAR}) in a
    command, args, exec probe or lifecycle hook, or a URL with a password written out."""
    leaks = []
    for label, c in containers(obj):
        secret_vars = {
            e["name"]
            for e in c.get("env", [])
            if "secretKeyRef" in (e.get("valueFrom") or {})
            and e["valueFrom"]["secretKeyRef"]["key"] not in NON_SECRET_VALUES
        }
        lines = {"command and args": c.get("command", []) + c.get("args", [])}
        lines |= {
            probe: c[probe]["exec"]["command"]
            for probe in ("startupProbe", "readinessProbe", "livenessProbe")
            if "exec" in c.get(probe, {})
        }
        lines |= {
            f"lifecycle {hook}": spec["exec"]["command"]
            for hook, spec in (c.get("lifecycle") or {}).items()
            if "exec" in spec
        }
        for where, argv in lines.items():
            text = " ".join(argv)
            leaks += [
                f"{ident(obj)} {label} {where}: ${name}"
                for name in sorted(secret_vars)
                if re.search(rf"\$\({name}\)|\$\{{?{name}\b", text)
            ]
            if re.search(r"://[^/\s:@]+:[^/\s@]+@", text):
                leaks.append(f"{ident(obj)} {label} {where}: a URL with a password")
    return leaks


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_on_any_command_line(overlay):
    leaks = [leak for w in workloads(render(f"overlays/{overlay}")) for leak in command_line_leaks(w)]
    assert not leaks, "\n".join(leaks)


def test_the_command_line_check_catches_leaks():
    import copy

    docs = render("overlays/local")
    mlflow, postgres = find(docs, "Deployment", "mlflow"), find(docs, "StatefulSet", "postgres")
    leaky = copy.deepcopy(mlflow)
    container(leaky, "mlflow")["args"] += ["--backend-store-uri", "$(PGPASSWORD)"]
    assert command_line_leaks(leaky) == ["Deployment/mlflow container mlflow command and args: $PGPASSWORD"]
    leaky = copy.deepcopy(postgres)
    container(leaky, "postgres")["livenessProbe"]["exec"]["command"] = ["sh", "-c", 'psql -W "${POSTGRES_PASSWORD}"']
    assert command_line_leaks(leaky) == ["StatefulSet/postgres container postgres livenessProbe: $POSTGRES_PASSWORD"]
    leaky = copy.deepcopy(mlflow)
    container(leaky, "mlflow")["args"] += ["--backend-store-uri", "postgresql://mlflow:hunter2@postgres/mlflow"]
    assert command_line_leaks(leaky) == ["Deployment/mlflow container mlflow command and args: a URL with a password"]
    # Non-secret keys from a Secret (the superuser's name in pg_isready) are fine.
    assert command_line_leaks(postgres) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_image_is_pinned_by_digest(overlay):
    images = {
        f"{ident(w)} {label}": c["image"]
        for w in workloads(render(f"overlays/{overlay}"))
        for label, c in containers(w)
    }
    unpinned = [f"{where}: {image}" for where, image in images.items() if not DIGEST.fullmatch(image)]
    assert not unpinned, "not pinned by digest:\n" + "\n".join(unpinned)
    # Only our own image, whose digest exists once it is built, may carry the placeholder.
    placeholders = {image.split("@")[0] for image in images.values() if image.endswith("@" + PLACEHOLDER_DIGEST)}
    assert all(re.fullmatch(rf"([^@]+/)?{OWN_IMAGE}:[\w.-]+", name) for name in placeholders), placeholders
    assert images["StatefulSet/postgres container postgres"].startswith("postgres:16@sha256:")
    assert not images["StatefulSet/postgres container postgres"].endswith(PLACEHOLDER_DIGEST)


def test_both_overlays_run_the_same_postgres_digest():
    pinned = {
        container(find(render(f"overlays/{o}"), "StatefulSet", "postgres"), "postgres")["image"] for o in OVERLAYS
    }
    assert len(pinned) == 1, pinned


# -- the image -------------------------------------------------------------------------------------


def test_mlflow_dockerfile():
    text = (REPO / "mlflow" / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    user = next(line.split()[1] for line in lines if line.startswith("USER "))
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {user} must be a numeric non-root UID"
    assert "EXPOSE 5000" in lines
    assert 'ENTRYPOINT ["mlflow", "server"]' in lines
    assert '"mlflow[auth]>=3.1,<4"' in text and "psycopg2-binary" in text and "boto3" in text
    assert "--no-cache-dir" in text
    # The Deployment runs as the image's user, so files the image owns stay accessible.
    docs, _ = _render("overlays/local")
    if docs is not None:
        deployment = find(docs, "Deployment", "mlflow")
        assert pod_spec(deployment)["securityContext"]["runAsUser"] == int(uid)
