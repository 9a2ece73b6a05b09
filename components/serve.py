"""serve: a registered model as an online server speaking the Open Inference Protocol (KServe's v1 and v2).

    python -m components.serve [--model models:/NAME@champion | models:/NAME/VERSION]
        [--host 127.0.0.1] [--port 8080] [--params params.yaml]

`make serve` runs it on the champion of register.model_name, port SERVE_PORT (default 8080). An alias is
resolved once, at start: the server says which version it serves and keeps serving that one. The same
command is the predictor of the InferenceService that pipelines/deploy.py renders, pinned to a version.

Endpoints (NAME = the registered model's name), all JSON:
    POST /v1/models/NAME:predict   {"instances": [...]}  -> {"predictions": [{"label", "prob_<class>"...}]}
    POST /v2/models/NAME/infer     {"inputs": [tensors]} -> outputs "label" (BYTES, n) and "probabilities"
                                    (FP32, n x classes, in the order of the metadata's classes)
    GET  /v2/models/NAME           metadata: the version served, the input signature, the class names
    GET  /v2/health/live, /v2/health/ready, /v1/models/NAME, /metrics (Prometheus)
Input per data kind is what batch predict reads from files: images (n, height, width, channels) 0..255,
uint8 or float; table rows as {column: value} objects (null = missing; v2: one tensor per column); texts.
Invalid input is a 400 whose `error` is one line naming the field; bodies above serve.max_request_bytes are
a 413. The model is loaded as data (components.scoring.load_registered), never unpickled.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from components.errors import UserError, run_cli

if TYPE_CHECKING:
    from components.params import Mlflow

log = logging.getLogger(__name__)

# OIP v2 datatypes of the input tensors, by numpy dtype kind (bool, int, unsigned, float, text)
V2_DATATYPES = {"b": "BOOL", "i": "INT64", "u": "UINT8", "f": "FP32", "O": "BYTES", "U": "BYTES", "S": "BYTES"}


@dataclass
class LoadedModel:
    """A registered model version, loaded as data and ready to score."""

    name: str  # the registered model's name: the served model name
    version: str
    uri: str  # models:/NAME/VERSION, what is served whatever alias named it
    meta: dict  # the model's metadata: kind, classes, reading settings, input_shape
    net: Any  # torch.nn.Module in eval mode
    config: dict
    preprocessor: Any

    @property
    def classes(self) -> list[str]:
        return list(self.config["classes"])

    @property
    def kind(self) -> str:
        return str(self.meta.get("kind", ""))


def load(model_uri: str, workdir: Path, http: Mlflow | None = None) -> LoadedModel:
    """The model version model_uri names (an alias resolved now, once), loaded as data into workdir; http:
    the tracking server's retries and timeouts (params.mlflow; MLflow's own defaults when None).
    Raises UserError for an unknown URI or files that are not this project's data."""
    from components import tracking
    from components.scoring import UnsafeArtifact, load_registered

    tracking.configure(http, create=False)
    found = tracking.model_version(model_uri, "--model", "nothing is served")
    name, version = found.name, str(found.version)
    pinned = f"models:/{name}/{version}"
    try:
        meta, net, config, preprocessor = load_registered(pinned, workdir)
    except UnsafeArtifact as exc:
        raise UserError(f"{pinned}: {exc}") from None
    return LoadedModel(name, version, pinned, meta, net, config, preprocessor)


def predict(model: LoadedModel, inputs: list | dict[str, np.ndarray]) -> pd.DataFrame:
    """Predictions (label, prob_<class> float32) for a request's input: v1 `instances` (a list) or v2 tensors
    (name -> array). The same scoring as batch predict (components.scoring.score). Raises UserError (one line,
    naming the field) for input this model cannot take; the caller answers 400."""
    from components import kinds
    from components.scoring import score

    if isinstance(inputs, list) and not inputs:
        raise UserError("instances: empty; give at least one example")
    raw = kinds.get(model.kind).request_input(inputs)
    try:
        return score(model.net, model.config, model.meta, model.preprocessor, raw)
    except (ValueError, TypeError, RuntimeError, KeyError) as exc:  # what torch or pandas say of odd input
        raise UserError(f"input: {model.uri} cannot score it: {str(exc).splitlines()[0][:200]}") from None


def v1_instances(body: Any) -> list:
    """The `instances` of a v1 request body (a JSON object, or its bytes when sent without a JSON content type,
    as `curl -d` does). Raises UserError when it is not JSON, or not an object with a list of instances."""
    import json

    if isinstance(body, bytes):
        try:
            body = json.loads(body)
        except ValueError as exc:
            raise UserError(f"body: not JSON ({exc})") from None
    if not isinstance(body, dict) or not isinstance(body.get("instances"), list):
        raise UserError('body: expected a JSON object {"instances": [one item per example]}')
    return body["instances"]


def v1_response(frame: pd.DataFrame) -> dict:
    """{"predictions": one {"label": str, "prob_<class>": float} per example}, as batch predict's rows."""
    return {"predictions": frame.to_dict(orient="records")}


def input_signature(model: LoadedModel) -> list[dict]:
    """The v2 input tensors this model takes: name, datatype, shape (-1 = any size)."""
    if model.kind == "image_folder":
        shape = model.meta.get("input_shape") or [-1, -1, -1, -1]
        return [{"name": "pixels", "datatype": "FP32", "shape": [-1, *shape[1:]]}]
    if model.kind == "text":
        return [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    schema = model.preprocessor.schema
    return [
        {"name": str(name), "datatype": V2_DATATYPES.get(np.dtype(column.dtype.type).kind, "BYTES"), "shape": [-1]}
        for name, column in schema.columns.items()
    ]


def output_signature(model: LoadedModel) -> list[dict]:
    return [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(model.classes)]},
    ]


def metadata(model: LoadedModel) -> dict:
    """The v2 model metadata, with the served version and, as parameters, the URI, data kind and classes."""
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": "pytorch",
        "inputs": input_signature(model),
        "outputs": output_signature(model),
        "parameters": {"model_uri": model.uri, "kind": model.kind, "classes": model.classes},
    }


def check_address(host: str, port: int) -> None:
    """Raises UserError when the server could not listen on host:port (a bad port or host, a port in use),
    before the model is loaded: uvicorn would say so only after loading it, in a traceback."""
    import socket

    if not 0 < port < 65536:
        raise UserError(f"--port {port}: give a port number 1..65535")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        raise UserError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port (SERVE_PORT for "
            "make serve) or --host"
        ) from None


def main(argv: list[str]) -> None:
    from components.params import Serve, load_params

    parser = argparse.ArgumentParser(description="Serve a registered model over KServe's Open Inference Protocol.")
    parser.add_argument(
        "--model",
        help="models:/NAME@ALIAS or models:/NAME/VERSION (default: the champion of register.model_name in --params)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument(
        "--max-request-bytes", type=int, help="refuse larger bodies with 413 (default: serve.max_request_bytes)"
    )
    args = parser.parse_args(argv)
    max_request_bytes, model_uri, http = Serve().max_request_bytes, args.model, None
    if args.params.exists() or args.model is None:  # --model with no params file: the schema's defaults
        params = load_params(args.params)
        max_request_bytes, http = params.serve.max_request_bytes, params.mlflow
        model_uri = args.model if args.model is not None else f"models:/{params.register.model_name}@champion"
    if args.max_request_bytes is not None:
        from pydantic import ValidationError

        try:  # serve.max_request_bytes' bounds
            max_request_bytes = Serve(max_request_bytes=args.max_request_bytes).max_request_bytes
        except ValidationError as exc:
            raise UserError(f"--max-request-bytes {args.max_request_bytes}: {exc.errors()[0]['msg']}") from None
    check_address(args.host, args.port)
    try:
        from components import model_server
    except ImportError as exc:
        raise UserError(
            f"the server needs the serve extra ({exc.name} is missing): pip install -e '.[serve]'"
        ) from None
    with tempfile.TemporaryDirectory(prefix="twinline-serve-") as tmp:
        model = load(model_uri, Path(tmp), http)
        log.info("serving %s (%s) on http://%s:%d/v2/models/%s", model.uri, model_uri, args.host, args.port, model.name)
        model_server.run(model, args.host, args.port, max_request_bytes)


if __name__ == "__main__":
    run_cli(main)
