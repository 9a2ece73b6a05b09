"""The Dockerfile really builds, and the image really runs a component as a non-root user.

No Docker engine here: buildah builds the Dockerfile with chroot isolation and runs commands in a
working container made from the image. No registry either, so the PyTorch base image is stood in
for by a local one: Debian bookworm from debootstrap plus the CPU torch wheel, both cached between
runs (`CACHE`, and the tags `BASE` and `TORCH_BASE` in containers-storage). pip inside the build
resolves exactly as pip here does: the host's merged pip configuration is mounted as /etc/pip.conf,
with every local path it names (wheel folders, file:// indexes, constraints, certificates).

Needs root, buildah, podman and debootstrap (`.ci/system-deps.sh` installs them). Without them the
test is skipped, except under CI=true, where it fails. Run with -s to see each step's time.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("TWINLINE_IMAGE_CACHE", "/var/tmp/twinline-image-cache"))
SUITE = "bookworm"  # its python3 is 3.11, the CPU wheel's cp311
BASE = f"localhost/twinline-base:{SUITE}"  # debootstrap minbase + python3 + venv
TORCH_BASE = f"localhost/twinline-base-torch:{SUITE}"  # stands in for pytorch/pytorch:*-runtime
IMAGE = "localhost/twinline:test"
UID = 10001
TOOLS = ("buildah", "podman", "debootstrap")
PER_CLASS = 8  # enough per class for the default stratified val/test split


def require_tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    problems = ([f"missing {', '.join(missing)} (install with .ci/system-deps.sh)"] if missing else []) + (
        ["needs root (debootstrap, buildah storage)"] if os.geteuid() != 0 else []
    )
    if problems:
        message = "container image test: " + "; ".join(problems)
        if os.environ.get("CI") == "true":
            pytest.fail(message + " -- CI=true, so this is a failure, not a skip")
        pytest.skip(message)


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, timeout=1800)
    if check and result.returncode != 0:
        out = (result.stdout + result.stderr).decode(errors="replace")
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{out[-6000:]}")
    return result


class Timer:
    def __init__(self):
        self.start = self.last = time.monotonic()

    def step(self, what: str) -> None:
        now = time.monotonic()
        print(f"[image] {what}: {now - self.last:.1f}s", flush=True)
        self.last = now


def image_exists(name: str) -> bool:
    return sh("buildah", "inspect", "--type", "image", name, check=False).returncode == 0


def debian_mirror() -> str:
    """The Debian mirror apt uses here (deb822 or one-line sources), so debootstrap needs no other network."""
    if os.environ.get("DEBIAN_MIRROR"):
        return os.environ["DEBIAN_MIRROR"]
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        text = path.read_text(errors="replace") if path.is_file() else ""
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            if uris and re.search(rf"^Suites:.*\b{SUITE}\b", stanza, re.M) and "security" not in uris[1]:
                return uris[1]
        for uri in re.findall(rf"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+{SUITE}\s", text, re.M):
            if "security" not in uri:
                return uri
    return "http://deb.debian.org/debian"


def pip_setup(workdir: Path) -> list[str]:
    """-v mounts that give pip in a container this host's pip configuration (files and PIP_* env merged)."""
    listing = sh(sys.executable, "-m", "pip", "config", "list").stdout.decode()
    config: dict[str, str] = {}
    lines = sorted(listing.splitlines(), key=lambda line: line.startswith(":env:"))  # PIP_* env wins
    for line in lines:  # `global.key='value'` from files, `:env:.key='value'`
        key, _, value = line.partition("=")
        section, _, name = key.rpartition(".")
        config[name if section in (":env:", "global", "install") else key] = ast.literal_eval(value)
    conf = workdir / "pip.conf"
    conf.write_text("[global]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(config.items()) if "." not in k))
    paths = {Path("/etc/ssl/certs")}
    for value in config.values():
        for word in value.split():
            path = Path(word.removeprefix("file://")) if word.startswith(("/", "file://")) else None
            if path is not None and path.exists():
                # file:///x/simple: its pages link to ../../files/, so mount the index root
                paths.add(path.parent if path.name == "simple" else path)
    paths = {p for p in paths if not any(q != p and q in p.parents for q in paths)}
    mounts = [f"-v={conf}:/etc/pip.conf:ro"] + [f"-v={p}:{p}:ro" for p in sorted(paths)]
    return mounts


def proxy_args() -> list[str]:
    names = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
    return [f"--build-arg={n}={os.environ[n]}" for n in names if os.environ.get(n)]


def ensure_base(mounts: list[str], timer: Timer) -> None:
    """BASE and TORCH_BASE in containers-storage; built once, then reused."""
    if image_exists(TORCH_BASE):
        timer.step(f"base {TORCH_BASE} (cached)")
        return
    if not image_exists(BASE):
        rootfs, stamp = CACHE / f"rootfs-{SUITE}", CACHE / f"rootfs-{SUITE}.done"
        if not stamp.exists():
            shutil.rmtree(rootfs, ignore_errors=True)
            CACHE.mkdir(parents=True, exist_ok=True)
            sh(
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv",
                SUITE,
                str(rootfs),
                debian_mirror(),
            )
            stamp.touch()
            timer.step(f"debootstrap {SUITE} from {debian_mirror()}")
        # as a distribution's base image ships: no apt lists, no package cache
        sh(
            "bash",
            "-o",
            "pipefail",
            "-c",
            f"tar -C {rootfs} --exclude='./var/lib/apt/lists/*' --exclude='./var/cache/apt/*' --exclude='./dev/*'"
            f" --exclude='./proc/*' --exclude='./sys/*' -c . | podman import --change 'CMD [\"/bin/bash\"]' - {BASE}",
        )
        timer.step(f"podman import {BASE}")
    wheels = sorted(Path("/opt/wheels").glob("torch-*+cpu-cp311-*.whl"))
    torch = str(wheels[-1]) if wheels else "torch>=2.4,<3"
    ctr = sh("buildah", "from", "--pull-never", BASE).stdout.decode().strip()
    try:
        sh(
            "buildah",
            "run",
            "--isolation",
            "chroot",
            *mounts,
            ctr,
            "--",
            "sh",
            "-c",
            'python3 "$(ls /usr/share/python-wheels/pip-*.whl)/pip" install --no-cache-dir --break-system-packages'
            f' --root-user-action=ignore --disable-pip-version-check "{torch}"',
        )
        # drop the (empty) mount points buildah created, as a real base image would not have them
        sh(
            "buildah",
            "run",
            "--isolation",
            "chroot",
            ctr,
            "--",
            "sh",
            "-c",
            "rm -f /etc/pip.conf; find /opt /etc/xdg -type f -size 0 -delete 2>/dev/null; "
            "find /opt /etc/xdg -depth -type d -empty -delete 2>/dev/null; rm -rf /root/.cache; true",
        )
        sh("buildah", "commit", "--rm", "-q", ctr, TORCH_BASE)
    except BaseException:
        sh("buildah", "rm", ctr, check=False)
        raise
    timer.step(f"{TORCH_BASE}: pip install {Path(torch).name} into the system python")


def pyproject_dependencies() -> set[str]:
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {re.match(r"\s*([A-Za-z0-9._-]+)", d)[1].lower().replace("_", "-") for d in deps}


def test_image_builds_and_runs_clean_as_non_root(tmp_path):
    require_tools()
    timer = Timer()
    mounts = pip_setup(tmp_path)
    ensure_base(mounts, timer)

    # Two passes over one layer cache (which ignores -v): the build stage with pip's configuration
    # mounted, then the whole file without mounts, so the final stage's RUN leaves no empty mount
    # points behind. Tagging the build stage also keeps its cached layers from being pruned as dangling.
    bud = [
        "buildah",
        "bud",
        "--isolation",
        "chroot",
        "--layers",
        "--pull-never",
        f"--build-arg=BASE_IMAGE={TORCH_BASE}",
        *proxy_args(),
        "-f",
        str(REPO / "Dockerfile"),
    ]
    sh(*bud, *mounts, "--target", "build", "-t", f"{IMAGE}-build", str(REPO))
    timer.step(f"buildah bud --target build -> {IMAGE}-build")
    sh(*bud, "-t", IMAGE, str(REPO))
    timer.step(f"buildah bud -> {IMAGE}")

    # real input: a few digit PNGs per class, mounted read-write at /work for the non-root user
    from components.sample_data import digit_images, export_digits

    work = tmp_path / "work"
    n_files = export_digits(work / "data", limit_per_class=PER_CLASS)
    (work / "params.yaml").write_text(yaml.safe_dump({"data": {"path": "/work/data", "channels": 1}}))
    work.chmod(0o777)

    # a numeric USER, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd
    config = json.loads(sh("buildah", "inspect", "--type", "image", IMAGE).stdout)["OCIv1"]["config"]
    assert config["User"] == f"{UID}:{UID}" and config["WorkingDir"] == "/app", config

    ctr = sh("buildah", "from", "--pull-never", IMAGE).stdout.decode().strip()
    try:

        def run(*cmd: str, user: str | None = None) -> str:
            """Run in the container as the image's own USER unless told otherwise."""
            as_user = ["--user", user] if user else []
            return sh(
                "buildah", "run", "--isolation", "chroot", *as_user, f"-v={work}:/work", ctr, "--", *cmd
            ).stdout.decode()

        run(
            "python",
            "-m",
            "components.clean",
            "--params",
            "/work/params.yaml",
            "--out",
            "/work/out/clean",
            "--report",
            "/work/out/clean.json",
        )
        timer.step("python -m components.clean in the container")

        report = json.loads((work / "out" / "clean.json").read_text())
        assert report.get("n_input", report.get("n_files")) == n_files == 10 * PER_CLASS, report
        assert report["n_kept"] == n_files and report["n_dropped"] == 0, report
        assert report["kept_per_class"] == {str(c): PER_CLASS for c in range(10)}, report
        out = work / "out" / "clean"
        with np.load(out / "images.npz" if out.is_dir() else out) as arrays:  # --out: a folder, or the .npz
            assert arrays["images"].shape == (n_files, 8, 8, 1) and arrays["images"].dtype == np.uint8
            assert arrays["labels"].shape == (n_files,)
            assert arrays["classes"].tolist() == [str(c) for c in range(10)]
            expected_images, expected_labels = digit_images(PER_CLASS)
            order = np.argsort(expected_labels, kind="stable")  # files are read class folder by class folder
            np.testing.assert_array_equal(arrays["images"][..., 0], expected_images[order])
            np.testing.assert_array_equal(arrays["labels"], expected_labels[order])

        # who and where the components run as: numeric non-root user, writable HOME, the venv's python
        probe = run(
            "sh",
            "-c",
            'id -u; id -g; echo "$HOME"; pwd; command -v python; command -v python3; '
            'test -w "$HOME" && echo home-writable; test -w /app && echo app-writable; '
            'echo "$MLFLOW_DISABLE_TELEMETRY $PYTHONUNBUFFERED"',
        ).split()
        assert probe == [
            str(UID),
            str(UID),
            "/home/app",
            "/app",
            "/opt/venv/bin/python",
            "/opt/venv/bin/python3",
            "home-writable",
            "app-writable",
            "true",
            "1",
        ], probe

        # torch is the base image's, seen through --system-site-packages, not a second copy in the venv
        torch_file = run("python", "-c", "import torch, components.clean; print(torch.__file__)").strip()
        assert torch_file.startswith("/usr/") and "/opt/venv/" not in torch_file, torch_file
        if "kfp" in pyproject_dependencies():  # a kfp lightweight component runs kfp.dsl.executor_main
            run("python3", "-c", "import components, kfp, kfp.dsl.executor_main, pipelines.steps")

        # nothing of the build left behind: no compilers, no pip caches, no apt lists (checked as root)
        leftovers = run(
            "sh",
            "-c",
            "for t in gcc cc g++ c++ make; do command -v $t; done; "
            "find / -xdev \\( -path '*/.cache/pip' -o -path '/root/.cache' -o -path '/tmp/*' "
            "-o -path /src -o -path /opt/project -o -path '/var/lib/apt/lists/*' -type f \\) "
            "-print 2>/dev/null; true",
            user="0:0",
        ).split()
        assert leftovers == [], leftovers
        timer.step("checks in the container")
    finally:
        sh("buildah", "rm", ctr, check=False)

    size = sh("buildah", "images", "--format", "{{.Size}}", IMAGE).stdout.decode().strip()
    print(f"[image] {IMAGE}: {size}; total {time.monotonic() - timer.start:.1f}s", flush=True)
