"""fetch reads only what a data source is: s3/gs/az/http(s) URLs, a DVC repo, or a local path under the data
root (kubeflow.data_root). Anything else the pod can read (its service-account token under
/var/run/secrets, a `..` or a symlink out of the root) never becomes an artifact; the refusal is one line
naming the URL and what is allowed."""

from pathlib import Path

import pytest

from components.errors import UserError
from components.fetch import fetch
from components.params import Kubeflow


@pytest.fixture
def root(tmp_path) -> Path:
    """A data root holding an image folder, with a secret next to it (outside the root)."""
    data = tmp_path / "data"
    (data / "digits" / "3").mkdir(parents=True)
    (data / "digits" / "3" / "a.png").write_bytes(b"png-bytes")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "token").write_text("service-account-token")
    return data


def refused(dest: Path, **source) -> str:
    with pytest.raises(UserError) as error:
        fetch(dest, **source)
    message = str(error.value)
    assert "\n" not in message
    assert not dest.exists(), "nothing is written when a source is refused"
    return message


def test_the_default_data_root_is_a_data_folder():
    assert fetch.__defaults__[-1] == Kubeflow().data_root == "/mnt/data"


def test_service_account_token_is_refused(tmp_path):
    uri = "file:///var/run/secrets/kubernetes.io/serviceaccount/token"
    message = refused(tmp_path / "raw", uri=uri, data_root="/mnt/data")
    assert uri in message and "outside the data root /mnt/data" in message
    assert "/var/run/secrets" in refused(tmp_path / "raw", uri="/var/run/secrets/kubernetes.io", data_root="/mnt/data")


def test_a_path_outside_the_root_is_refused_also_through_dotdot_and_symlinks(root, tmp_path):
    secret = tmp_path / "secret"
    for uri in (f"file://{secret}/token", str(secret), f"file://{root}/../secret/token", f"{root}/digits/../../secret"):
        assert "outside the data root" in refused(tmp_path / "raw", uri=uri, data_root=str(root)), uri
    (root / "link").symlink_to(secret)  # the URL itself is a symlink out of the root
    assert str(secret) in refused(tmp_path / "raw", uri=f"file://{root}/link/token", data_root=str(root))
    (root / "digits" / "3" / "b.png").symlink_to(secret / "token")  # a file inside the folder links out
    assert f"{secret}/token is outside" in refused(tmp_path / "raw", uri=f"file://{root}/digits", data_root=str(root))
    (root / "digits" / "3" / "b.png").unlink()
    (root / "digits" / "4").symlink_to(secret)  # a sub-folder links out
    assert str(secret) in refused(tmp_path / "raw", uri=str(root / "digits"), data_root=str(root))


def test_a_path_inside_the_root_is_copied(root, tmp_path):
    (root / "digits" / "5").symlink_to(root / "digits" / "3")  # symlinks that stay inside the root are followed
    (root / "digits" / "3" / "up").symlink_to(root / "digits")  # ... except a loop back up
    assert fetch(tmp_path / "raw", uri=f"file://{root}/digits", data_root=str(root)) == 2
    assert (tmp_path / "raw" / "3" / "a.png").read_bytes() == b"png-bytes"
    assert (tmp_path / "raw" / "5" / "a.png").read_bytes() == b"png-bytes"
    assert fetch(tmp_path / "one", uri=str(root / "digits" / "3" / "a.png"), data_root=str(root)) == 1
    assert (tmp_path / "one" / "a.png").read_bytes() == b"png-bytes"


def test_local_paths_are_refused_without_a_data_root(root, tmp_path):
    assert "kubeflow.data_root is empty" in refused(tmp_path / "raw", uri=str(root / "digits"), data_root="")


@pytest.mark.parametrize(
    "uri",
    [
        "ftp://example.org/digits",
        "sftp://host/data",
        "memory://digits",
        "simplecache::file:///var/run/secrets/token",
        "zip://a.png::s3://bucket/x.zip",
        "file://otherhost/data/digits",
    ],
)
def test_other_schemes_are_refused(uri, tmp_path):
    message = refused(tmp_path / "raw", uri=uri, data_root="/mnt/data")
    assert message.startswith(uri)
    assert ("s3, gs" in message and "https" in message) or "chained" in message or "no other host" in message


@pytest.mark.parametrize(
    "repo, path, expected",
    [
        ("file:///var/run/secrets", "data", "outside the data root"),
        ("ftp://example.org/repo", "data", "scheme ftp:// is refused for dvc_repo"),
        ("https://github.com/org/repo", "../../etc", "without .. or a leading /"),
        ("https://github.com/org/repo", "/var/run/secrets", "without .. or a leading /"),
    ],
)
def test_a_dvc_repo_must_be_remote_or_under_the_root(repo, path, expected, tmp_path):
    assert expected in refused(tmp_path / "raw", dvc_repo=repo, dvc_path=path, data_root="/mnt/data")


def test_a_local_dvc_repo_is_read_at_a_revision_so_its_symlinks_lead_nowhere(tmp_path):
    import subprocess

    root = tmp_path / "data"
    repo = root / "repo"
    (repo / "data" / "digits" / "a").mkdir(parents=True)
    (repo / "data" / "digits" / "a" / "1.png").write_bytes(b"png")
    (tmp_path / "secret").write_text("service-account-token")
    (repo / "data" / "digits" / "a" / "2.png").symlink_to(tmp_path / "secret")
    import sys

    dvc = str(Path(sys.executable).parent / "dvc")
    for cmd in (
        ["git", "init", "-q"],
        [dvc, "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "data"],
    ):
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True)
    fetch(tmp_path / "raw", dvc_repo=str(repo), dvc_path="data/digits", data_root=str(root))
    copied = {p.name: p.read_bytes() for p in (tmp_path / "raw" / "a").iterdir()}
    assert copied["1.png"] == b"png" and b"service-account-token" not in copied.get("2.png", b"")


@pytest.mark.parametrize(
    "uri",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:8080/x.csv",
        "https://localhost/x.csv",
        "http://[::1]/x.csv",
        "http://[::ffff:169.254.169.254]/",
        "http://metadata.google.internal/computeMetadata/v1/",
    ],
)
def test_the_pod_itself_and_the_metadata_service_are_refused(uri, tmp_path):
    message = refused(tmp_path / "raw", uri=uri)  # IPv6 literals hold '::', refused as chained URLs
    assert "not a data source" in message or "chained URLs" in message


def test_a_data_root_of_the_whole_file_system_is_refused(tmp_path):
    assert "is the whole file system" in refused(tmp_path / "raw", uri="/etc/passwd", data_root="/")


def test_an_upper_case_scheme_is_read_as_its_lower_case():
    from components.fetch import check_uri

    assert check_uri("HTTPS://data.example.com/x.csv", "") == "https://data.example.com/x.csv"
