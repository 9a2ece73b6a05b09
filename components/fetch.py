"""fetch (Kubeflow only): bring the raw data into the pipeline, from a plain URI or a DVC repo at a revision.

Under DVC the data is already in the workspace (`dvc pull`); on a cluster the first task gets it:
- `uri`: any path or fsspec URL the image can read (s3://bucket/digits, gs://..., /mnt/data/digits);
- `dvc_repo` + `dvc_rev` + `dvc_path`: a git repo tracked with DVC, read through `dvc.api`, which
  pulls the files from that repo's DVC remote at that revision.

    python -m components.fetch --dvc-repo https://github.com/org/repo --dvc-rev v1.2 --dvc-path data/digits --out DIR
"""
import argparse
import logging
import shutil
import tempfile
from pathlib import Path

from kfp.dsl import Dataset, Output

from components.errors import UserError, run_cli

log = logging.getLogger(__name__)


def fetch(dest: Path, uri: str = "", dvc_repo: str = "", dvc_rev: str = "", dvc_path: str = "data/digits") -> int:
    """Copy the data folder, or a single table file into dest/, to dest (created whole or not at all);
    returns the number of files."""
    if bool(uri) == bool(dvc_repo):
        raise UserError("give exactly one data source: a URI (data_uri) or a DVC repo (dvc_repo, dvc_rev, dvc_path)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        if uri:
            import fsspec
            fs, path = fsspec.core.url_to_fs(uri)
            if not fs.exists(path):
                raise UserError(f"{uri}: not found; check data_uri")
        else:
            from dvc.api import DVCFileSystem
            fs, path = DVCFileSystem(dvc_repo, rev=dvc_rev or None), dvc_path
            if not fs.exists(path):
                raise UserError(f"{dvc_repo}@{dvc_rev or 'HEAD'}: {dvc_path} is not tracked there; check dvc_path")
        if fs.isdir(path):          # an image folder: its contents become dest/
            fs.get(path.rstrip("/") + "/", str(staging) + "/", recursive=True)
        else:                       # a table file: dest/<file name>
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
    parser.add_argument("--dvc-path", default="data/digits")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    fetch(args.out, args.uri, args.dvc_repo, args.dvc_rev, args.dvc_path)


def fetch_step(raw: Output[Dataset], data_uri: str = "", dvc_repo: str = "", dvc_rev: str = "",
               dvc_path: str = "data/digits"):
    """Kubeflow: the pipeline's first task; `raw` is the image folder, or a folder holding the table file,
    that the clean task reads."""
    from pathlib import Path
    from components.fetch import fetch
    fetch(Path(raw.path), data_uri, dvc_repo, dvc_rev, dvc_path)


if __name__ == "__main__":
    run_cli(main)
