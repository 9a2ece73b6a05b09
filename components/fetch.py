"""fetch (Kubeflow only): bring the raw data into the pipeline, from a plain URI or a DVC repo at a revision.

Under DVC the data is already in the workspace (`dvc pull`); on a cluster the first task gets it:
- `uri`: an s3://, gs://, az:// (abfs://) or http(s):// URL, or a local path (plain or file://) under the
  data root (kubeflow.data_root, e.g. a mounted data volume: /mnt/data/images);
- `dvc_repo` + `dvc_rev` + `dvc_path`: a git repo tracked with DVC (https://, ssh://, git@host:path, or a
  local path under the data root), read through `dvc.api`, which pulls the files from that repo's DVC
  remote at that revision.
Nothing else: the fetched files become an artifact other users can read, so a URL must not reach what
the pod itself can read (file:///var/run/secrets/..., a symlink or `..` out of the data root).

    python -m components.fetch --dvc-repo https://github.com/org/repo --dvc-rev v1.2 --dvc-path data/raw --out DIR
"""

import argparse
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from components.errors import UserError, run_cli

log = logging.getLogger(__name__)

# Schemes a data source uses (fsspec names: gcs = gs, abfs(s) = az), read through fsspec.
REMOTE_SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "abfss", "http", "https")
# Where a DVC repo is cloned from; `git@host:path` (scp-like) counts as ssh.
GIT_SCHEMES = ("https", "http", "ssh", "git")
SCP_LIKE = re.compile(r"[\w.-]+@[\w.-]+:(?!//)")
DEFAULT_DATA_ROOT = "/mnt/data"  # = params kubeflow.data_root's default


def local_path(uri: str) -> str | None:
    """The path a plain path or file:// URL names; None for any other URL."""
    split = urlsplit(uri)
    if split.scheme == "file":
        if split.netloc not in ("", "localhost"):
            raise UserError(f"{uri}: a file:// URL names no other host; write file:///PATH")
        return unquote(split.path)
    return uri if not split.scheme else None


def under_root(path: str, data_root: str, what: str) -> Path:
    """`path` resolved (symlinks and .. followed), or a UserError if that lies outside data_root."""
    if not data_root:
        raise UserError(
            f"{what}: local paths are refused (kubeflow.data_root is empty); use s3://, gs://, az://, "
            "http(s):// or a DVC repo"
        )
    root, resolved = Path(data_root).resolve(), Path(path).resolve()
    if root == Path(root.anchor):
        raise UserError(
            f"{what}: the data root {data_root} is the whole file system; set kubeflow.data_root to the "
            "data folder (e.g. a mounted volume)"
        )
    if not resolved.is_relative_to(root):
        raise UserError(
            f"{what}: {resolved} is outside the data root {root} (kubeflow.data_root); local data must "
            "lie under it, or use s3://, gs://, az://, http(s):// or a DVC repo"
        )
    return resolved


def check_uri(uri: str, data_root: str) -> str:
    """The URL or resolved local path to read for data_uri; UserError for anything a data source does not use."""
    if "::" in uri:  # fsspec chaining (simplecache::file://...) would hide the real scheme
        raise UserError(f"{uri}: chained URLs (::) are refused; give one s3://, gs://, az://, http(s):// URL or a path")
    path = local_path(uri)
    if path is not None:
        return str(under_root(path, data_root, uri))
    split = urlsplit(uri)
    scheme = split.scheme.lower()
    if scheme not in REMOTE_SCHEMES:
        raise UserError(
            f"{uri}: scheme {scheme}:// is refused for data_uri; allowed: {', '.join(REMOTE_SCHEMES)}, "
            f"a DVC repo (dvc_repo), or a path/file:// under kubeflow.data_root ({data_root or 'unset'})"
        )
    if scheme in ("http", "https") and own_host(split.hostname or ""):
        raise UserError(
            f"{uri}: {split.hostname} is the pod itself or the cloud's metadata service, not a data "
            "source; use the data server's name"
        )
    return scheme + uri[len(scheme) :]  # fsspec knows its protocols in lower case only


def own_host(host: str) -> bool:
    """Whether an http(s) host names the machine itself or a link-local address (169.254.169.254 is every
    cloud's metadata service, which hands out credentials). Names that resolve there are not looked up."""
    import ipaddress

    if host.lower() in ("localhost", "metadata.google.internal") or host.lower().endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    address = getattr(address, "ipv4_mapped", None) or address
    return address.is_loopback or address.is_link_local or address.is_unspecified


def check_dvc(repo: str, path: str, data_root: str) -> str:
    """The repo URL (a local one resolved) to clone; UserError for another scheme or a path leaving the repo."""
    if PurePosixPath(path).is_absolute() or ".." in PurePosixPath(path).parts:
        raise UserError(f"dvc_path {path}: must be a path inside the repo, without .. or a leading /")
    if SCP_LIKE.match(repo):
        return repo
    local = local_path(repo)
    if local is not None:
        return str(under_root(local, data_root, repo))
    scheme = urlsplit(repo).scheme.lower()
    if scheme not in GIT_SCHEMES:
        raise UserError(
            f"{repo}: scheme {scheme}:// is refused for dvc_repo; allowed: {', '.join(GIT_SCHEMES)}, "
            f"git@host:path, or a path under kubeflow.data_root ({data_root or 'unset'})"
        )
    return repo


def copy_local(src: Path, staging: Path, root: Path) -> None:
    """Copy a file, or a folder's contents, into staging; every file and folder reached, through symlinks
    too, must resolve under root (a symlink in the data folder must not pull /var/run/secrets in)."""
    if src.is_file():
        shutil.copyfile(src, staging / src.name)
        return
    above = {str(src): {src}}  # folder -> the real folders on its way down, to stop symlink loops
    for here, dirs, files in os.walk(src, followlinks=True):
        for name in list(dirs):
            real = under_root(os.path.join(here, name), str(root), os.path.join(here, name))
            if real in above[here]:  # a link back up: following it would never end
                dirs.remove(name)
            else:
                above[os.path.join(here, name)] = above[here] | {real}
        for name in files:
            source = Path(here, name)
            under_root(str(source), str(root), str(source))
            target = staging / source.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


def fetch(
    dest: Path,
    uri: str = "",
    dvc_repo: str = "",
    dvc_rev: str = "",
    dvc_path: str = "data/raw",
    data_root: str = DEFAULT_DATA_ROOT,
) -> int:
    """Copy the data folder, or a single table file into dest/, to dest (created whole or not at all);
    returns the number of files. Local paths (plain, file://, or a local DVC repo) must lie under data_root."""
    if bool(uri) == bool(dvc_repo):
        raise UserError("give exactly one data source: a URI (data_uri) or a DVC repo (dvc_repo, dvc_rev, dvc_path)")
    source = check_uri(uri, data_root) if uri else check_dvc(dvc_repo, dvc_path, data_root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        if uri and local_path(uri) is not None:
            if not Path(source).exists():
                raise UserError(f"{uri}: not found; check data_uri")
            copy_local(Path(source), staging, Path(data_root).resolve())
        else:
            if uri:
                import fsspec

                fs, path = fsspec.core.url_to_fs(source)
                if not fs.exists(path):
                    raise UserError(f"{uri}: not found; check data_uri")
            else:
                from dvc.api import DVCFileSystem

                # always a git revision, never a local repo's working tree, where a symlink could lead out of
                # the data root: at a revision a symlink is its link text
                fs, path = DVCFileSystem(source, rev=dvc_rev or "HEAD"), dvc_path
                if not fs.exists(path):
                    raise UserError(f"{dvc_repo}@{dvc_rev or 'HEAD'}: {dvc_path} is not tracked there; check dvc_path")
            if fs.isdir(path):  # an image folder: its contents become dest/
                fs.get(path.rstrip("/") + "/", str(staging) + "/", recursive=True)
            else:  # a table file: dest/<file name>
                fs.get(path, str(staging / Path(path).name))
        n_files = sum(1 for p in staging.rglob("*") if p.is_file())
        if n_files == 0:
            raise UserError(f"{uri or dvc_repo + ':' + dvc_path}: no files found")
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("fetched %d files from %s", n_files, uri or f"{dvc_repo}@{dvc_rev or 'HEAD'}:{dvc_path}")
    return n_files


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Fetch raw data from a URI or a DVC repo.")
    parser.add_argument("--uri", default="")
    parser.add_argument("--dvc-repo", default="")
    parser.add_argument("--dvc-rev", default="")
    parser.add_argument("--dvc-path", default="data/raw")
    parser.add_argument(
        "--data-root",
        default=DEFAULT_DATA_ROOT,
        help="local paths and repos must lie under this folder (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    fetch(args.out, args.uri, args.dvc_repo, args.dvc_rev, args.dvc_path, args.data_root)


if __name__ == "__main__":
    run_cli(main)
