"""The online model server (components/serve.py, KServe's Python SDK) started for real on loopback, on the
champion of each shipped example (digits images, penguins table, spam texts), compared with batch predict
on the same inputs; bad requests are 4xx with one line and the server keeps serving."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import PENGUINS, REPO, Project, make_penguins_project, make_project
from servers import ServedModel, free_port, wait_for

pytest.importorskip("kserve", reason="the serve extra (pip install -e '.[serve]')")


def batch_predict(project: Project, model_uri: str, source, out) -> pd.DataFrame:
    project.run(sys.executable, "-m", "components.predict", "--model", model_uri, "--input", str(source),
                "--output", str(out))  # fmt: skip
    return pd.read_csv(out, dtype={"label": str})


def assert_same(frame: pd.DataFrame, records: list[dict], classes: list[str]) -> None:
    served = pd.DataFrame.from_records(records)
    assert served["label"].astype(str).tolist() == frame["label"].tolist()
    columns = [f"prob_{c}" for c in classes]
    np.testing.assert_allclose(served[columns].to_numpy(), frame[columns].to_numpy(), atol=1e-6, rtol=0)


def server_for(project: Project, model_uri: str, *args: str) -> ServedModel:
    return ServedModel(model_uri, project.root, project.env, project.root / "serve.log", args).start()


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("digits") / "project")
    project.repro()
    server = server_for(project, "models:/digits-classifier@champion")
    yield project, server
    server.stop()


@pytest.fixture(scope="module")
def penguins(tmp_path_factory):
    project = make_penguins_project(tmp_path_factory.mktemp("penguins") / "project")
    project.repro()
    server = server_for(project, "models:/penguins-classifier@champion")
    yield project, server
    server.stop()


@pytest.fixture(scope="module")
def spam(tmp_path_factory):
    from test_text_kind import make_spam_project

    project = make_spam_project(tmp_path_factory.mktemp("spam") / "project", "bilstm")
    server = server_for(project, "models:/spam-bilstm@champion")
    yield project, server
    server.stop()


def digit_pixels(project: Project, n: int = 12) -> tuple[list, list]:
    """n PNGs of the project's digits folder: (their paths, their pixels (n, 8, 8, 1) as uint8 lists)."""
    from PIL import Image

    paths = sorted((project.root / "data" / "digits").rglob("*.png"))[::50][:n]
    pixels = [np.asarray(Image.open(p).convert("L"), np.uint8)[..., None] for p in paths]
    return paths, np.stack(pixels).tolist()


def test_an_image_champion_answers_v1_and_v2_as_batch_predict_does(digits, tmp_path):
    project, server = digits
    paths, pixels = digit_pixels(project)
    folder = tmp_path / "images"
    for i, path in enumerate(paths):
        (folder / f"{i:02d}").mkdir(parents=True)
        (folder / f"{i:02d}" / path.name).write_bytes(path.read_bytes())
    frame = batch_predict(project, "models:/digits-classifier@champion", folder, tmp_path / "out.csv")
    classes = [str(c) for c in range(10)]

    status, v1 = server.request("POST", "/v1/models/digits-classifier:predict", {"instances": pixels})
    assert status == 200, v1
    assert_same(frame, v1["predictions"], classes)

    as_float = np.asarray(pixels, np.float32)  # float pixels 0..255 are the same input
    tensor = {"name": "pixels", "shape": list(as_float.shape), "datatype": "FP32", "data": as_float.ravel().tolist()}
    status, v2 = server.request("POST", "/v2/models/digits-classifier/infer", {"id": "r1", "inputs": [tensor]})
    assert status == 200, v2
    outputs = {o["name"]: o for o in v2["outputs"]}
    assert v2["model_version"] == "1" and v2["id"] == "r1"
    assert outputs["probabilities"]["shape"] == [len(paths), 10]
    probabilities = np.asarray(outputs["probabilities"]["data"]).reshape(len(paths), 10)
    records = [
        {"label": label, **{f"prob_{c}": p for c, p in zip(classes, row, strict=True)}}
        for label, row in zip(outputs["label"]["data"], probabilities, strict=True)
    ]
    assert_same(frame, records, classes)


def test_metadata_names_the_version_the_signature_and_the_classes_and_health_answers(digits):
    _, server = digits
    status, meta = server.request("GET", "/v2/models/digits-classifier")
    assert status == 200
    assert meta["versions"] == ["1"] and meta["parameters"]["model_uri"] == "models:/digits-classifier/1"
    assert meta["parameters"]["classes"] == [str(c) for c in range(10)]
    assert meta["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 8, 8, 1]}]
    assert {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]} in meta["outputs"]
    assert server.request("GET", "/v2/health/live")[0] == 200
    assert server.request("GET", "/v2/health/ready")[0] == 200
    assert server.request("GET", "/v1/models/digits-classifier") == (200, {"name": "digits-classifier", "ready": True})
    assert server.request("GET", "/v2/models/no-such-model")[0] == 404


BAD_IMAGE_REQUESTS = {
    "wrong shape": ({"instances": [[[1, 2, 3]] * 8] * 2}, "shape"),
    "wrong size": ({"instances": np.zeros((1, 9, 9, 1)).tolist()}, "(8, 8, 1)"),
    "text for pixels": ({"instances": [[["a"] * 1] * 8] * 1}, "expected numbers"),
    "no instances": ({"inputs": []}, "instances"),
    "empty instances": ({"instances": []}, "empty"),
    "empty body": (b"", ""),
    "not JSON": (b"{not json", ""),
    "NaN pixel": (b'{"instances": [[[[NaN]]]]}', ""),
    "pixel above 255": ({"instances": np.full((1, 8, 8, 1), 300).tolist()}, "pixel values must be 0..255"),
    "negative pixel": ({"instances": np.full((1, 8, 8, 1), -5).tolist()}, "pixel values must be 0..255"),
    "pixels as strings": ({"instances": np.full((1, 8, 8, 1), "1").tolist()}, "expected numbers"),
    "a JSON string": (b'"hello"', "expected a JSON object"),
}


@pytest.mark.parametrize("case", BAD_IMAGE_REQUESTS)
def test_a_bad_request_is_a_4xx_with_one_line_and_the_next_good_one_succeeds(digits, case):
    project, server = digits
    body, expected = BAD_IMAGE_REQUESTS[case]
    status, answer = server.request("POST", "/v1/models/digits-classifier:predict", body)
    assert 400 <= status < 500, (status, answer)
    error = answer["error"] if isinstance(answer, dict) else answer
    assert expected in str(error) and "Traceback" not in str(error) and "\n" not in str(error), error
    _, pixels = digit_pixels(project, 2)
    assert server.request("POST", "/v1/models/digits-classifier:predict", {"instances": pixels})[0] == 200


def test_bad_v2_tensors_are_4xx_naming_the_tensor(digits):
    _, server = digits
    short = {"inputs": [{"name": "pixels", "shape": [2, 8, 8, 1], "datatype": "FP32", "data": [1.0] * 10}]}
    status, answer = server.request("POST", "/v2/models/digits-classifier/infer", short)
    assert status == 400 and answer["error"].startswith("inputs['pixels']:"), answer
    full = dict(short["inputs"][0], data=[1.0] * 128)
    two = {"inputs": [full, dict(full, name="more")]}
    status, answer = server.request("POST", "/v2/models/digits-classifier/infer", two)
    assert status == 400 and "one tensor" in answer["error"], answer
    overflow = {"inputs": [dict(full, datatype="UINT8", data=[300] * 128)]}
    status, answer = server.request("POST", "/v2/models/digits-classifier/infer", overflow)
    assert status == 400 and answer["error"].startswith("inputs['pixels']:"), answer
    status, answer = server.request("POST", "/v2/models/digits-classifier/infer", {"inputs": [full, full]})
    assert status == 400 and "given twice" in answer["error"], answer
    unknown = {"inputs": [dict(full, datatype="FOO")]}
    status, answer = server.request("POST", "/v2/models/digits-classifier/infer", unknown)
    assert status == 400 and "datatype 'FOO' is none of" in answer["error"], answer
    for body, expected in ((b"", "body"), (b'{"inputs": [', "body"), ({"inputs": [{"name": "pixels"}]}, "shape")):
        status, answer = server.request("POST", "/v2/models/digits-classifier/infer", body)
        assert status == 422 and expected in answer["error"] and "\n" not in answer["error"], answer
        assert "1.0" not in answer["error"], "the input is not echoed back"


def test_a_10_mb_body_is_refused_with_413_and_the_metrics_count_it(digits):
    project, server = digits
    status, answer = server.request("POST", "/v1/models/digits-classifier:predict", b" " * (10 * 2**20))
    assert status == 413 and "serve.max_request_bytes" in answer["error"], answer
    _, pixels = digit_pixels(project, 2)
    assert server.request("POST", "/v1/models/digits-classifier:predict", {"instances": pixels})[0] == 200
    status, text = server.request("GET", "/metrics")
    samples = {}
    for line in str(text).splitlines():
        if line.startswith("twinline_"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples['twinline_requests_total{code="413",method="POST",route="unmatched"}'] >= 1
    assert samples['twinline_request_errors_total{code="413",route="unmatched"}'] >= 1
    predicted = 'twinline_requests_total{code="200",method="POST",route="/v1/models/{model_name}:predict"}'
    assert samples[predicted] >= 1
    assert samples['twinline_request_duration_seconds_count{route="/v1/models/{model_name}:predict"}'] >= 1
    assert any(name.startswith("request_predict_seconds_count") for name in str(text).split()), "KServe's own"


def test_a_version_is_pinned_and_bad_model_uris_are_one_line_errors(digits, tmp_path):
    project, _ = digits
    pinned = server_for(project, "models:/digits-classifier/1")
    try:
        assert pinned.request("GET", "/v2/models/digits-classifier")[1]["versions"] == ["1"]
    finally:
        pinned.stop()
    assert (
        "serving models:/digits-classifier/1 (models:/digits-classifier@champion)"
        in (project.root / "serve.log").read_text()
    )
    for uri, expected in (
        ("models:/digits-classifier@nope", "registered model 'digits-classifier' has no alias 'nope' in sqlite:///"),
        ("models:/digits-classifier/7", "registered model 'digits-classifier' has no version 7 in sqlite:///"),
        ("runs:/abc/model", "--model 'runs:/abc/model': write models:/NAME@ALIAS"),
        ("", "--model '': write models:/NAME@ALIAS"),
    ):
        result = project.run(sys.executable, "-m", "components.serve", "--model", uri, "--port", str(free_port()),
                             check=False)  # fmt: skip
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and expected in lines[0], result.stderr
    taken = digits[1].port  # the module's server listens there
    result = project.run(sys.executable, "-m", "components.serve", "--port", str(taken), check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: cannot listen on 127.0.0.1:{taken} (Address already in use)"), lines


def penguin_rows(project: Project, n: int = 40) -> pd.DataFrame:
    frame = pd.read_csv(project.root / PENGUINS)
    return frame.iloc[::8].head(n).drop(columns=["species"])


def test_a_table_champion_takes_rows_with_missing_values_and_ints_as_batch_predict_does(penguins, tmp_path):
    project, server = penguins
    rows = penguin_rows(project)
    assert rows.isna().any().any(), "the sample includes missing values"
    rows.to_csv(tmp_path / "rows.csv", index=False)
    frame = batch_predict(project, "models:/penguins-classifier@champion", tmp_path / "rows.csv", tmp_path / "o.csv")
    classes = ["Adelie", "Chinstrap", "Gentoo"]
    records = json.loads(rows.to_json(orient="records"))  # NaN -> null; year and body mass stay ints
    assert isinstance(records[0]["year"], int)
    status, v1 = server.request("POST", "/v1/models/penguins-classifier:predict", {"instances": records})
    assert status == 200, v1
    assert_same(frame, v1["predictions"], classes)

    status, meta = server.request("GET", "/v2/models/penguins-classifier")
    types = {tensor["name"]: tensor["datatype"] for tensor in meta["inputs"]}
    assert types["island"] == "BYTES" and types["bill_length_mm"] == "FP32", types
    inputs = []
    for name, datatype in types.items():
        values = rows[name]
        data = [None if pd.isna(v) else v for v in values] if datatype == "BYTES" else values.astype(float).tolist()
        inputs.append({"name": name, "shape": [len(rows)], "datatype": datatype, "data": data})
    body = json.dumps({"inputs": inputs}).replace("NaN", "null").encode()
    status, v2 = server.request("POST", "/v2/models/penguins-classifier/infer", body)
    assert status == 200, v2
    labels = next(o for o in v2["outputs"] if o["name"] == "label")["data"]
    assert labels == frame["label"].tolist()


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"drop": "island"}, "'island'"),
        ({"set": ("bill_length_mm", "long")}, "bill_length_mm"),
        ({"row": [39.1, 18.7]}, "instances[0]: expected an object of column: value"),
        ({"set": ("bill_length_mm", [1, 2])}, "instances[0]['bill_length_mm']: expected a number, a string or null"),
    ],
    ids=["missing column", "text for a number", "a list for a row", "a list for a value"],
)
def test_a_bad_row_is_a_400_naming_the_column(penguins, change, expected):
    project, server = penguins
    records = json.loads(penguin_rows(project, 3).to_json(orient="records"))
    for i, record in enumerate(records):
        if "row" in change:
            records[i] = change["row"]
        elif "drop" in change:
            record.pop(change["drop"])
        else:
            record[change["set"][0]] = change["set"][1]
    status, answer = server.request("POST", "/v1/models/penguins-classifier:predict", {"instances": records})
    assert status == 400 and expected in answer["error"] and "\n" not in answer["error"], answer
    good = json.loads(penguin_rows(project, 3).to_json(orient="records"))
    assert server.request("POST", "/v1/models/penguins-classifier:predict", {"instances": good})[0] == 200


def test_a_text_champion_takes_strings_as_batch_predict_does(spam, tmp_path):
    project, server = spam
    texts = pd.read_csv(project.root / "data" / "spam.csv")["body"].fillna("").astype(str).head(30).tolist()
    texts = [t for t in texts if t.strip()][:20] + ["Caf\u00e9 \u00e0 midi ? \U0001f600"]
    # the model reads a table's texts from subject and body, joined by a blank line: an empty subject adds nothing
    pd.DataFrame({"subject": "", "body": texts}).to_csv(tmp_path / "texts.csv", index=False)
    frame = batch_predict(project, "models:/spam-bilstm@champion", tmp_path / "texts.csv", tmp_path / "o.csv")
    status, v1 = server.request("POST", "/v1/models/spam-bilstm:predict", {"instances": texts})
    assert status == 200, v1
    assert_same(frame, v1["predictions"], ["ham", "spam"])
    objects = [{"text": t} for t in texts]
    assert server.request("POST", "/v1/models/spam-bilstm:predict", {"instances": objects})[1] == v1
    tensor = {"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}
    status, v2 = server.request("POST", "/v2/models/spam-bilstm/infer", {"inputs": [tensor]})
    assert status == 200, v2
    assert next(o for o in v2["outputs"] if o["name"] == "label")["data"] == frame["label"].tolist()
    status, answer = server.request("POST", "/v1/models/spam-bilstm:predict", {"instances": ["fine", 3]})
    assert status == 400 and "row 1" in answer["error"], answer
    assert server.request("GET", "/v2/models/spam-bilstm")[1]["inputs"] == [
        {"name": "text", "datatype": "BYTES", "shape": [-1]}
    ]


@pytest.mark.slow
def test_mlflow_models_serve_answers_on_the_registered_pyfunc_as_batch_predict_does(digits, tmp_path):
    """What users will try: MLflow's own scoring server on the registered model (its Python code, in this
    environment), on the same pixels."""
    project, _ = digits
    paths, pixels = digit_pixels(project, 6)
    frame = None
    folder = tmp_path / "images"
    folder.mkdir()
    for i, path in enumerate(paths):
        (folder / f"{i:02d}.png").write_bytes(path.read_bytes())
    frame = batch_predict(project, "models:/digits-classifier@champion", folder, tmp_path / "out.csv")
    port = free_port()
    log = tmp_path / "mlflow-serve.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/digits-classifier@champion",
             "--env-manager", "local", "--host", "127.0.0.1", "-p", str(port), "-w", "1"],
            cwd=project.root, env=project.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        import os
        import signal
        import urllib.request

        def answer():
            if process.poll() is not None:
                raise AssertionError(log.read_text()[-3000:])
            body = json.dumps({"inputs": np.asarray(pixels, np.float32).tolist()}).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/invocations", body, {"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return json.loads(response.read())
            except OSError:
                return None

        result = wait_for(answer, 180, "mlflow models serve")
        assert_same(frame, result["predictions"], [str(c) for c in range(10)])
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def test_make_serve_serves_the_params_champion_on_serve_port(digits):
    """`make serve` itself, in the project: register.model_name's champion from params.yaml, on SERVE_PORT."""
    project, _ = digits
    venv = Path(sys.executable).parent.parent
    port = free_port()
    server = ServedModel("", project.root, project.env, project.root / "make.log")
    server.port, server.url = port, f"http://127.0.0.1:{port}"
    # -o: this test's environment has the serve extra; make must not reinstall it into the project copy
    server.cmd = ["make", "-f", str(REPO / "Makefile"), f"VENV={venv}", f"SERVE_PORT={port}",
                  "-o", f"{venv}/.installed-serve", "serve"]  # fmt: skip
    server.start()
    try:
        assert server.request("GET", "/v2/models/digits-classifier")[1]["versions"] == ["1"]
    finally:
        server.stop()
    assert "serving models:/digits-classifier/1 (models:/digits-classifier@champion)" in server.log.read_text()
