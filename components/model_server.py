"""The KServe side of components.serve: a `kserve.Model` around a loaded model, served by KServe's own REST
application (v1 and v2 endpoints, health, /metrics) on a chosen address, behind a request-size limit and
request metrics. Needs the `serve` extra (kserve); components/serve.py holds the logic and the CLI.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
from prometheus_client import Counter, Histogram

from components import serve
from components.errors import UserError


@contextmanager
def _argv_of_kserve_alone():
    # kserve.model_server parses sys.argv when imported: `--model models:/...` would be read as its --model_name.
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        yield
    finally:
        sys.argv = argv


# KServe answers v1 with FastAPI's ORJSONResponse, which FastAPI now deprecates: one warning per response.
warnings.filterwarnings("ignore", message=".*ORJSONResponse is deprecated")

with _argv_of_kserve_alone():
    import kserve
    from fastapi import APIRouter
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from kserve.errors import InvalidInput, ModelNotFound
    from kserve.model_server import FASTAPI_APP_IMPORT_STRING, ModelServer, app
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
    from kserve.protocol.rest.server import RESTServer

log = logging.getLogger(__name__)

REQUESTS = Counter("twinline_requests_total", "HTTP requests", ["method", "route", "code"])
ERRORS = Counter("twinline_request_errors_total", "HTTP requests answered with 4xx or 5xx", ["route", "code"])
LATENCY = Histogram(
    "twinline_request_duration_seconds",
    "HTTP request latency, from the request's arrival to the end of the response",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class ServedModel(kserve.Model):
    """The loaded model behind KServe's v1/v2 handlers. Scoring runs on one worker thread, one request at a
    time (torch already uses every core per batch), so the event loop keeps answering health probes."""

    def __init__(self, model: serve.LoadedModel):
        super().__init__(model.name)
        self.model = model
        self.ready = True
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="score")

    def get_input_types(self) -> list[dict]:
        return serve.input_signature(self.model)

    def get_output_types(self) -> list[dict]:
        return serve.output_signature(self.model)

    async def predict(self, payload, headers=None, response_headers=None):
        loop = asyncio.get_running_loop()
        try:
            if isinstance(payload, InferRequest):
                names = [tensor.name for tensor in payload.inputs]
                twice = next((name for name in names if names.count(name) > 1), None)
                if twice is not None:
                    raise UserError(f"inputs: the tensor {twice!r} is given twice")
                inputs = {tensor.name: _tensor(tensor) for tensor in payload.inputs}
                frame = await loop.run_in_executor(self._worker, serve.predict, self.model, inputs)
                return self._v2_response(payload, frame)
            instances = serve.v1_instances(payload)
            frame = await loop.run_in_executor(self._worker, serve.predict, self.model, instances)
            return serve.v1_response(frame)
        except UserError as exc:
            raise InvalidInput(str(exc)) from None

    def _v2_response(self, request: InferRequest, frame) -> InferResponse:
        labels = frame["label"].to_numpy(dtype=object)
        probabilities = frame[[f"prob_{c}" for c in self.model.classes]].to_numpy(np.float32)
        outputs = [
            InferOutput("label", [len(labels)], "BYTES", labels.tolist()),
            InferOutput("probabilities", list(probabilities.shape), "FP32", probabilities.ravel().tolist()),
        ]
        return InferResponse(request.id or str(uuid.uuid4()), self.name, outputs, model_version=self.model.version)


V2_DATATYPES = {
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
}  # the Open Inference Protocol's tensor datatypes


def _tensor(tensor) -> np.ndarray:
    """A v2 input tensor as a numpy array. Raises UserError naming it when its datatype is unknown or its data
    does not fill its shape or fit its datatype."""
    if tensor.datatype not in V2_DATATYPES:
        raise UserError(
            f"inputs[{tensor.name!r}]: datatype {tensor.datatype!r} is none of {', '.join(sorted(V2_DATATYPES))}"
        )
    try:
        return tensor.as_numpy()
    except (ValueError, TypeError, OverflowError, InvalidInput) as exc:
        raise UserError(
            f"inputs[{tensor.name!r}]: {str(exc).splitlines()[0][:160]} (datatype {tensor.datatype}, shape "
            f"{tensor.shape}: give as many values as the shape holds, of that type)"
        ) from None


def _route(scope) -> str:
    """The path template that serves a request (bounded label values for the metrics): the matched route's,
    or, for a request refused before routing (413), the route it would have gone to."""
    from starlette.routing import Match

    route = scope.get("route")
    if route is None:
        route = next((r for r in app.routes if r.matches(scope)[0] == Match.FULL), None)
    return getattr(route, "path", "unmatched")


class BodyTooLarge(Exception):
    pass


DRAIN_LIMIT = 64 * 2**20  # a refused body is read and dropped up to this size, so the client sees the 413


class Guard:
    """ASGI middleware: refuses bodies above max_request_bytes with 413 before reading them (or as soon as a
    body without Content-Length passes the limit), and counts and times every request for /metrics."""

    def __init__(self, app, max_request_bytes: int):
        self.app, self.limit = app, max_request_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status, seen = time.perf_counter(), [500], [0]

        async def send_counted(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        async def receive_limited():
            message = await receive()
            seen[0] += len(message.get("body", b""))
            if seen[0] > self.limit:
                raise BodyTooLarge
            return message

        try:
            length = dict(scope["headers"]).get(b"content-length", b"0")
            if int(length) > self.limit:
                raise BodyTooLarge
            await self.app(scope, receive_limited, send_counted)
        except BodyTooLarge:
            await self._drain(receive, seen[0])
            await self._too_large(send_counted)
        finally:
            route = _route(scope)
            REQUESTS.labels(scope["method"], route, str(status[0])).inc()
            LATENCY.labels(route).observe(time.perf_counter() - start)
            if status[0] >= 400:
                ERRORS.labels(route, str(status[0])).inc()

    @staticmethod
    async def _drain(receive, seen: int) -> None:
        # A client still sending when the answer comes sees a broken connection instead of the 413.
        while seen < DRAIN_LIMIT:
            message = await receive()
            seen += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body"):
                return

    async def _too_large(self, send) -> None:
        body = (
            f'{{"error": "body: larger than serve.max_request_bytes ({self.limit} bytes); send fewer examples '
            'per request"}'
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _metadata_router(served: ServedModel) -> APIRouter:
    # Registered before KServe's own route for the same path: its response model keeps name, versions,
    # platform, inputs and outputs only, and the class names belong in the metadata too.
    router = APIRouter()

    async def model_metadata(model_name: str) -> dict:
        if model_name != served.name:
            raise ModelNotFound(model_name)
        return serve.metadata(served.model)

    router.add_api_route("/v2/models/{model_name}", model_metadata, methods=["GET"])
    return router


async def _invalid_input(request, exc: InvalidInput) -> JSONResponse:
    # KServe's own handler logs a traceback for every bad request; the client's mistake is one line.
    log.info("400 %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(status_code=400, content={"error": str(exc)})


async def _model_not_found(request, exc: ModelNotFound) -> JSONResponse:
    log.info("404 %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(status_code=404, content={"error": f"{exc}; this server serves {request.app.state.served!r}"})


async def _not_a_request(request, exc: RequestValidationError) -> JSONResponse:
    """A v2 body that is not JSON or not an inference request: FastAPI's 422, with one line naming the first
    field at fault instead of every pydantic error with the whole input echoed back."""
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":  # loc: ("body", character offset)
        problem = first.get("ctx", {}).get("error", "a decode error")
        message = f"body: not JSON ({problem} at character {first['loc'][-1]})"
    else:
        where = ".".join(str(part) for part in first.get("loc", ())[1:] if part != "InferenceRequest") or "body"
        message = f"{where}: {first.get('msg', 'not an inference request')}"
    log.info("422 %s %s: %s", request.method, request.url.path, message)
    return JSONResponse(status_code=422, content={"error": message})


def run(model: serve.LoadedModel, host: str, port: int, max_request_bytes: int) -> None:
    """Serve model on host:port until SIGINT or SIGTERM (uvicorn's graceful shutdown)."""
    import uvicorn

    served = ServedModel(model)
    server = ModelServer(http_port=port, enable_grpc=False, workers=1, enable_docs_url=False)
    server.register_model(served)
    app.include_router(_metadata_router(served))
    rest = RESTServer(FASTAPI_APP_IMPORT_STRING, server.dataplane, server.model_repository_extension, port)
    rest.create_application()  # KServe's endpoints, exception handlers and middlewares on its app
    app.add_exception_handler(InvalidInput, _invalid_input)
    app.add_exception_handler(ModelNotFound, _model_not_found)
    app.add_exception_handler(RequestValidationError, _not_a_request)
    app.state.served = served.name
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)  # two timing lines per request besides the access log
    app.add_middleware(Guard, max_request_bytes=max_request_bytes)
    # KServe's RESTServer always listens on 0.0.0.0; on a workstation the server listens on loopback only.
    uvicorn.run(app, host=host, port=port, log_config=None, timeout_graceful_shutdown=10)
