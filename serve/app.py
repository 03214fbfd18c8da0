"""The HTTP face of the model server: the Open Inference Protocol (KServe V2 REST) plus an image endpoint.

Endpoints (all JSON; errors are ``{"error": "..."}`` with a 4xx status, never a stack trace):

- ``GET  /v2/health/live``, ``GET /v2/health/ready``  open to all; ready once a version answered its warm-up
- ``GET  /v2``                                         server metadata
- ``GET  /v2/models/{name}[/versions/{v}]``           inputs and outputs from the release's input contract
- ``GET  /v2/models/{name}[/versions/{v}]/ready``
- ``POST /v2/models/{name}[/versions/{v}]/infer``     FP32 tensors in the release's input layout
- ``POST /v1/models/{name}:predict-image``            image files (multipart, base64 JSON, or a raw image body),
                                                       decoded exactly as training and batch scoring decode them
- ``GET  /metrics``                                    Prometheus

Every answer from a model carries its version (``model_version`` and the ``X-Model-Version`` header) and
the released variant this host chose to serve (``X-Model-Variant``; why: the model metadata's
``parameters.variant_reason``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from serve.batching import BatcherClosed
from serve.config import ServeConfig
from serve.follower import ModelHost
from serve.metrics import ServerMetrics
from serve.model import ServedModel
from serve.protocol import (
    BINARY_HEADER,
    ProtocolError,
    infer_response,
    input_tensor,
    model_metadata,
    parse_infer_request,
    requested_outputs,
    split_body,
)
from serve.requestlog import RequestLog, ServedRows
from serve.table_rows import RowsRefused, encode_request, frame_from_inputs, frame_from_instances, is_column_request
from tasks.hashing import sha256_bytes
from tasks.registry.store import ArtifactStore, open_store
from tasks.score.inference import softmax

log = logging.getLogger("lepton.serve")
access = logging.getLogger("lepton.serve.access")

OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})


class ApiError(Exception):
    """An answer with a 4xx/5xx status and ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


class BodyTooLarge(Exception):
    pass


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status, headers, media_type="application/json")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message}, status, headers)


class Server:
    """What the endpoints share: config, store, the model host, the request log, metrics."""

    def __init__(self, config: ServeConfig, token: str | None, store: ArtifactStore) -> None:
        self.config = config
        self.token = token
        self.store = store
        self.metrics = ServerMetrics()
        self.arriving = 0
        self.request_log = RequestLog(store, config.model_name, config.request_log, on_change=self.metrics.observe_log)
        self.host = ModelHost(
            store,
            config,
            arriving=lambda: self.arriving,
            on_batch=self.metrics.batch_size.observe,
            on_load_failure=lambda version, reason: self.metrics.load_failures.labels(config.model_name).inc(),
            on_swap=lambda old, new: self.metrics.swapped(config.model_name, old, new),
        )

    def check_name(self, name: str, version: str | None = None) -> None:
        if name != self.config.model_name:
            raise ApiError(404, f"model {name!r} is not served here; this server serves {self.config.model_name!r}")
        current = self.host.current
        if version is not None and (current is None or version != current.version):
            serving = current.version if current else "none yet"
            raise ApiError(404, f"version {version!r} of {name} is not in service (serving: {serving})")

    def serving(self) -> ServedModel:
        model = self.host.current
        if model is None:
            raise ApiError(503, self.not_ready_reason())
        return model

    def not_ready_reason(self) -> str:
        name = self.config.model_name
        if self.host.alias_version is None:
            return f"{name} has no production release in {self.store.uri} yet"
        refusal = self.host.refused.get(self.host.alias_version)
        if refusal:
            return f"{name} {self.host.alias_version} was refused: {refusal.reason}"
        return f"{name} {self.host.alias_version} is loading"

    def acquire(self, version: str | None) -> ServedModel:
        """The serving version, held for this request; it must be ``version`` when the request names one.

        Checked after the body is read: a swap while it arrived must not answer a pinned request
        with another version.
        """
        model = self.host.acquire()
        if model is None:
            raise ApiError(503, self.not_ready_reason())
        if version is not None and model.version != version:
            model.release()
            raise ApiError(404, f"version {version!r} of {self.config.model_name} is not in service (serving: {model.version})")
        return model

    async def run(self, model: ServedModel, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        self.metrics.queue_depth.set(model.batcher.queued_rows + len(batch))
        try:
            return await model.batcher.submit(batch)
        except BatcherClosed:
            # Only after a drain ran out of time: the version was retired under this request.
            raise ApiError(503, f"{model.version} was retired while this request waited; send it again") from None
        finally:
            self.metrics.queue_depth.set(model.batcher.queued_rows)


class Arrival:
    """A request on its way to the model: counted as arriving until it submits its rows (the batcher
    waits for arriving requests), holding the version it took until its response is ready."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.model: ServedModel | None = None
        self.arrived = False
        server.arriving += 1

    def take(self, version: str | None) -> ServedModel:
        """The serving version, held for this request (see :meth:`Server.acquire`)."""
        self.model = self.server.acquire(version)
        return self.model

    async def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        self._arrive()
        return await self.server.run(self.model, batch)

    def _arrive(self) -> None:
        if not self.arrived:
            self.arrived = True
            self.server.arriving -= 1

    def __enter__(self) -> Arrival:
        return self

    def __exit__(self, *exc: object) -> None:
        self._arrive()
        if self.model is not None:
            self.model.release()


class Guard:
    """Pure ASGI middleware: request ids, auth, the body limit, metrics and the access log for every request."""

    def __init__(self, app: Any, server: Server) -> None:
        self.app = app
        self.server = server
        # Request ids: this process's random prefix and a counter (no system call per request).
        self._prefix, self._ids = os.urandom(4).hex(), itertools.count(1)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        server, start = self.server, time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = headers.get("x-request-id", "")[:64] or f"{self._prefix}-{next(self._ids)}"
        response: dict[str, Any] = {"status": 500, "version": None, "started": False}

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                response["status"], response["started"] = message["status"], True
                extra = [(b"x-request-id", request_id.encode("latin-1"))]
                for key, value in message.get("headers", []):
                    if key.lower() == b"x-model-version":
                        response["version"] = value.decode("latin-1")
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        async def reply(answer: Response) -> None:
            await answer(scope, receive, send_with_id)

        server.metrics.in_flight.inc()
        try:
            denied = self._denied(scope["path"], headers)
            limit = server.config.limits.max_body_bytes
            declared = headers.get("content-length")
            if denied is not None:
                await reply(denied)
            elif declared is not None and (not declared.isdigit() or int(declared) > limit):
                await reply(error_response(413, f"request body of {declared} bytes; at most {limit} are allowed"))
            else:
                received = 0

                async def limited_receive() -> dict:
                    nonlocal received
                    message = await receive()
                    if message["type"] == "http.request":
                        received += len(message.get("body", b""))
                        if received > limit:
                            raise BodyTooLarge
                    return message

                scope.setdefault("state", {})["request_id"] = request_id
                try:
                    await self.app(scope, limited_receive, send_with_id)
                except BodyTooLarge:
                    if not response["started"]:
                        await reply(error_response(413, f"request body over {limit} bytes; at most {limit} are allowed"))
                except Exception:  # noqa: BLE001 - the app's error handler answered (and logged) already
                    if not response["started"]:
                        await reply(error_response(500, f"internal error; the server log has the details (request id {request_id})"))
        finally:
            server.metrics.in_flight.dec()
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            status = str(response["status"])
            elapsed = time.perf_counter() - start
            server.metrics.requests.labels(endpoint, status).inc()
            server.metrics.latency.labels(endpoint, status).observe(elapsed)
            if access.isEnabledFor(logging.INFO):
                access.info(json.dumps({
                    "request_id": request_id, "method": scope["method"], "path": scope["path"], "endpoint": endpoint,
                    "status": response["status"], "ms": round(elapsed * 1000, 3), "model_version": response["version"],
                    "client": (scope.get("client") or ["?"])[0],
                }))

    def _denied(self, path: str, headers: dict[str, str]) -> Response | None:
        token = self.server.token
        if token is None or path in OPEN_PATHS:
            return None
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return error_response(401, "missing bearer token: send 'Authorization: Bearer <token>'",
                                  {"WWW-Authenticate": 'Bearer realm="lepton"'})
        # Constant time: the comparison reveals nothing about how much of the token was right.
        if not secrets.compare_digest(given.encode(), token.encode()):
            return error_response(401, "invalid bearer token", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return None


def create_app(config: ServeConfig, token: str | None, store: ArtifactStore | None = None) -> Guard:
    """The server app; the model is loaded (and followed) from the app's startup on."""
    server = Server(config, token, store or open_store(config.store))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        server.request_log.start()
        follower = asyncio.get_running_loop().create_task(server.host.follow(), name="lepton-alias-follower")
        try:
            yield
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            await server.host.close()
            await asyncio.to_thread(server.request_log.stop, config.request_log.shutdown_seconds)

    async def _api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, exc.headers)

    async def _too_large(request: Request, exc: BodyTooLarge) -> Response:
        limit = config.limits.max_body_bytes
        return error_response(413, f"request body over {limit} bytes; at most {limit} are allowed")

    async def _http_error(request: Request, exc: HTTPException) -> Response:
        message = {404: f"no endpoint {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
        return error_response(exc.status_code, message.get(exc.status_code, str(exc.detail)), exc.headers)

    async def _gone(request: Request, exc: ClientDisconnect) -> Response:
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it, the access log does

    async def _unexpected(request: Request, exc: Exception) -> Response:
        request_id = request.scope.get("state", {}).get("request_id", "?")
        log.exception("request %s failed", request_id)
        return error_response(500, f"internal error; the server log has the details (request id {request_id})")

    async def live(request: Request) -> Response:
        return json_response({"live": True})

    async def ready(request: Request) -> Response:
        if server.host.current is None:
            # Open to anyone: with auth on, why is for those with the token (the model's ready endpoint, logs).
            body = {"ready": False} if server.token else {"ready": False, "reason": server.not_ready_reason()}
            return json_response(body, 503)
        return json_response({"ready": True})

    async def server_metadata(request: Request) -> Response:
        return json_response({"name": "lepton", "version": "1", "extensions": ["binary_tensor_data"]})

    async def metadata(request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        server.check_name(name, version)
        loaded = server.serving().loaded
        body = model_metadata(
            name, loaded.version, loaded.runtime, loaded.contract, loaded.classes, loaded.variant, loaded.variant_reason
        )
        return json_response(body.model_dump(), headers={"X-Model-Version": loaded.version, "X-Model-Variant": loaded.variant})

    async def model_ready(request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        server.check_name(name, version)
        current = server.host.current
        if current is None:
            return json_response({"name": name, "ready": False, "reason": server.not_ready_reason()}, 503)
        return json_response({"name": name, "ready": True}, headers={"X-Model-Version": current.version})

    async def infer(request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        server.check_name(name, version)
        with Arrival(server) as arrival:
            body = await request.body()
            try:
                header, binary = split_body(body, request.headers.get(BINARY_HEADER))
                parsed = parse_infer_request(orjson.loads(header))
                outputs = requested_outputs(parsed)
            except orjson.JSONDecodeError as exc:
                raise ApiError(400, f"the body is not JSON: {exc}") from None
            except ProtocolError as exc:
                raise ApiError(400, str(exc)) from None
            loaded = arrival.take(version).loaded
            rows = None
            try:
                if loaded.contract.kind == "tabular" and is_column_request(parsed):
                    rows = encode_request(frame_from_inputs(parsed, loaded.contract, config.limits.max_rows), loaded.contract)
                    tensor = loaded.contract.to_model_input(rows.raw)
                else:
                    tensor = input_tensor(parsed, loaded.contract, config.limits.max_rows, binary)
            except ProtocolError as exc:
                raise ApiError(400, str(exc)) from None
            except RowsRefused as exc:
                raise ApiError(422, str(exc)) from None
            logits, embeddings = await arrival.run(tensor)
        probabilities = softmax(logits)
        request_id = parsed.id or request.scope["state"]["request_id"]
        server.request_log.record(ServedRows(
            version=loaded, files=[f"request:{request_id}/{i}" for i in range(len(tensor))], logits=logits,
            embeddings=embeddings, tensor=None if rows else tensor, raw=rows.raw if rows else None,
            problems=rows.problems if rows else None,
        ))
        answer, blobs = infer_response(name, loaded.version, parsed.id, outputs, logits, probabilities, loaded.classes)
        if rows and any(rows.problems):
            answer["parameters"] = {"schema_problems": rows.problems}
        if not blobs:
            return json_response(answer, headers={"X-Model-Version": loaded.version, "X-Model-Variant": loaded.variant})
        head = orjson.dumps(answer)
        return Response(
            head + blobs, 200, {"X-Model-Version": loaded.version, "X-Model-Variant": loaded.variant, BINARY_HEADER: str(len(head))},
            media_type="application/octet-stream",
        )

    async def predict_image(request: Request) -> Response:
        name = request.path_params["name"]
        server.check_name(name)
        with Arrival(server) as arrival:
            images = await _images(request, config.limits.max_rows)
            loaded = arrival.take(None).loaded
            # Off the event loop: a few kilobytes of PNG can hold megapixels of work.
            decoded = await asyncio.to_thread(loaded.contract.read, [data for _, data in images], config.limits.max_image_pixels)
            if decoded.failures:
                problems = "; ".join(f"{images[i][0]}: {reason}" for i, reason in decoded.failures[:5])
                raise ApiError(422, f"{len(decoded.failures)} of {len(images)} images cannot be used: {problems}")
            logits, embeddings = await arrival.run(loaded.contract.to_model_input(decoded.raw))
        probabilities = softmax(logits)
        hashes = [sha256_bytes(data) for _, data in images]
        server.request_log.record(ServedRows(
            version=loaded, files=[file for file, _ in images], logits=logits, embeddings=embeddings, raw=decoded.raw,
            sizes=decoded.meta[["original_width", "original_height"]].to_numpy(dtype=np.float64), sha256=hashes,
        ))
        classes = loaded.classes
        predictions = [
            {
                "file": file,
                "image_sha256": digest,
                "class": classes[int(p.argmax())],
                "confidence": float(p.max()),
                "probabilities": {c: float(v) for c, v in zip(classes, p)},
            }
            for (file, _), digest, p in zip(images, hashes, probabilities)
        ]
        return json_response(
            {"model_name": name, "model_version": loaded.version, "predictions": predictions},
            headers={"X-Model-Version": loaded.version, "X-Model-Variant": loaded.variant},
        )

    async def predict_rows(request: Request) -> Response:
        """KServe V1 ``:predict`` for table models: ``{"instances": [{column: value}, ...]}`` -> ``{"predictions": [...]}``."""
        name = request.path_params["name"]
        server.check_name(name)
        with Arrival(server) as arrival:
            try:
                body = orjson.loads(await request.body())
            except orjson.JSONDecodeError as exc:
                raise ApiError(400, f"the body is not JSON: {exc}") from None
            loaded = arrival.take(None).loaded
            if loaded.contract.kind != "tabular":
                raise ApiError(400, f"{name} takes images: use /v1/models/{name}:predict-image or the V2 infer endpoint")
            try:
                rows = encode_request(frame_from_instances(body, loaded.contract, config.limits.max_rows), loaded.contract)
            except ProtocolError as exc:
                raise ApiError(400, str(exc)) from None
            except RowsRefused as exc:
                raise ApiError(422, str(exc)) from None
            logits, embeddings = await arrival.run(loaded.contract.to_model_input(rows.raw))
        probabilities = softmax(logits)
        request_id = request.scope["state"]["request_id"]
        server.request_log.record(ServedRows(
            version=loaded, files=[f"request:{request_id}/{i}" for i in range(len(rows.raw))], logits=logits,
            embeddings=embeddings, raw=rows.raw, problems=rows.problems,
        ))
        classes = loaded.classes
        predictions = [
            {
                "class": classes[int(p.argmax())],
                "confidence": float(p.max()),
                "probabilities": {c: float(v) for c, v in zip(classes, p)},
                **({"schema_problems": problem} if problem else {}),
            }
            for p, problem in zip(probabilities, rows.problems)
        ]
        return json_response(
            {"model_name": name, "model_version": loaded.version, "predictions": predictions},
            headers={"X-Model-Version": loaded.version, "X-Model-Variant": loaded.variant},
        )

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    routes = [
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/models/{name}", metadata, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}", metadata, methods=["GET"]),
        Route("/v2/models/{name}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
        Route("/v1/models/{name}:predict-image", predict_image, methods=["POST"]),
        Route("/v1/models/{name}:predict", predict_rows, methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            ApiError: _api_error, BodyTooLarge: _too_large, HTTPException: _http_error, ClientDisconnect: _gone,
            Exception: _unexpected,
        },
    )
    return Guard(app, server)


async def _images(request: Request, max_images: int) -> list[tuple[str, bytes]]:
    """(name, bytes) of each image a predict-image request carries.

    Accepted: ``multipart/form-data`` (every file part), JSON ``{"images": [{"name": ..., "b64": ...} | "<base64>", ...]}``,
    or a single image as the raw body (``image/*`` or ``application/octet-stream``).
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await request.form(max_files=max_images, max_fields=max_images)
        images = [(getattr(v, "filename", None) or k, await v.read()) for k, v in form.multi_items() if hasattr(v, "read")]
    elif kind == "application/json":
        try:
            payload = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"the body is not JSON: {exc}") from None
        entries = payload.get("images") if isinstance(payload, dict) else None
        if not isinstance(entries, list):
            raise ApiError(400, 'a JSON body must be {"images": [{"name": ..., "b64": ...} or "<base64>", ...]}')
        images = []
        for index, entry in enumerate(entries[: max_images + 1]):
            name, encoded = (entry.get("name") or f"image-{index}", entry.get("b64")) if isinstance(entry, dict) else (
                f"image-{index}", entry)
            if not isinstance(encoded, str):
                raise ApiError(400, f"images[{index}] has no base64 string ('b64')")
            try:
                images.append((str(name), base64.b64decode(encoded, validate=True)))
            except (binascii.Error, ValueError):
                raise ApiError(400, f"images[{index}] ({name}) is not valid base64") from None
    elif kind.startswith("image/") or kind == "application/octet-stream":
        images = [(request.headers.get("x-file-name", "image"), await request.body())]
    else:
        raise ApiError(
            415, f"content type {kind or 'none'!r}; send multipart/form-data, application/json with base64 images, or image/*"
        )
    if not images:
        raise ApiError(400, "no image in the request")
    if len(images) > max_images:
        raise ApiError(413, f"more than {max_images} images in one request; split it")
    return images
