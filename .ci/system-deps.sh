#!/usr/bin/env bash
# System packages the tests need beyond Python: tests/test_image.py builds the Dockerfile with
# buildah, imports a debootstrap'ed Debian base with podman and runs a component in the image;
# tests/test_mlflow_server.py opens the MLflow UI in Debian's chromium (driven by Playwright, no
# browser download); tests/test_mlflow_shared_server.py runs PostgreSQL's server binaries.
# Debian/Ubuntu, as root. Idempotent: installs only what is missing, and leaves a working setup alone.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "system-deps: run as root (apt-get, containers-storage in /var/lib/containers)" >&2
    exit 1
fi

# command -> Debian package
declare -A need=(
    [buildah]=buildah            # builds the Dockerfile, runs commands in the image (chroot isolation)
    [podman]=podman              # `podman import`: a rootfs tarball -> local base image
    [debootstrap]=debootstrap    # the Debian base, from the apt mirror (no registry needed)
    [wget]=wget                  # debootstrap's downloader
    [chromium]=chromium          # the MLflow UI test's browser
)
missing=()
for cmd in "${!need[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
[[ -e /usr/share/keyrings/debian-archive-keyring.gpg ]] || missing+=(debian-archive-keyring)
[[ -e /etc/ssl/certs/ca-certificates.crt ]] || missing+=(ca-certificates)   # never upgrade it in passing
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)  # server binaries; tests start their own

if ((${#missing[@]})); then
    echo "system-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    echo "system-deps: buildah, podman, debootstrap, chromium, postgresql already installed"
fi

# containers-storage: the default overlay driver works as root on ext4/xfs; where it cannot mount
# (e.g. overlay inside an overlay filesystem), fall back to vfs: slower and bigger, but it works.
probe() {
    local ctr
    ctr=$(buildah from scratch 2>/dev/null) || return 1
    buildah mount "$ctr" >/dev/null 2>&1 && buildah umount "$ctr" >/dev/null 2>&1
    local rc=$?
    buildah rm "$ctr" >/dev/null 2>&1 || true
    return $rc
}
if probe; then
    echo "system-deps: containers-storage OK ($(buildah info --format '{{.store.GraphDriverName}}' 2>/dev/null || echo '?'))"
else
    conf=/etc/containers/storage.conf
    if [[ -e $conf ]] && grep -Eq '^\s*driver\s*=\s*"vfs"' "$conf"; then
        echo "system-deps: buildah cannot create a container even with the vfs driver ($conf)" >&2
        exit 1
    fi
    echo "system-deps: overlay storage does not work here; switching $conf to the vfs driver"
    [[ -e $conf ]] && cp "$conf" "$conf.bak"
    mkdir -p /etc/containers
    printf '[storage]\ndriver = "vfs"\nrunroot = "/run/containers/storage"\ngraphroot = "/var/lib/containers/storage"\n' >"$conf"
    # a store initialised with another driver refuses to open; wipe it only when it holds no images
    if [[ -z $(buildah images -q 2>/dev/null) ]]; then
        rm -rf /var/lib/containers/storage /run/containers/storage
    fi
    probe || { echo "system-deps: buildah still cannot create a container with vfs" >&2; exit 1; }
fi
