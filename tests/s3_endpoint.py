"""A real S3-compatible HTTP endpoint on 127.0.0.1 for tests: moto's server, plus faults on demand.

Two additions to moto's ``ThreadedMotoServer``, both outside the S3 code under test:

- conditional PUTs (``If-Match``/``If-None-Match``) are applied one at a time. moto checks the
  precondition and then writes, in two steps; real S3 does both atomically, and that atomicity
  is what the registry's alias moves rely on.
- ``fail_from(n, mode)`` makes the n-th request (counting from 0) and every later one fail until
  ``heal()``: ``"error"`` answers 500 InternalError, ``"stop"`` drops the connection of that
  request and stops listening, so later requests are refused as by an endpoint that went away.
- ``fail_matching(predicate, times)`` answers 500 InternalError to the next ``times`` requests the
  predicate picks (e.g. the listing of a second page), and normally to every other.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

FaultMode = Literal["error", "stop"]


@dataclass(frozen=True)
class Request:
    """One request the endpoint received, and whether it was failed on purpose."""

    method: str
    path: str
    query: str
    failed: bool
    sse: str | None = None

    @property
    def is_upload(self) -> bool:
        """A request that writes object data (a PUT or one multipart part)."""
        return self.method == "PUT"


class S3Endpoint(ThreadedMotoServer):
    """moto's S3 server on 127.0.0.1 that can be broken and healed while a client uses it."""

    def __init__(self) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request drowns test output
        self.requests: list[Request] = []
        self._fail_from: int | None = None
        self._matching: tuple[Callable[[Request], bool], int] | None = None
        self._mode: FaultMode = "error"
        self._stopped = False
        self._stopper: threading.Thread | None = None
        self._count_lock = threading.Lock()
        self._write_lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"

    def _server_entry(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(
            self._ip_address, self._port, self._middleware(app), True, request_handler=MotoRequestHandler
        )
        # Restarts after a "stop" fault come back on the same port, as a rebooted endpoint would.
        self._port = self._server.server_address[1]
        self._server_ready_event.set()
        self._server.serve_forever()

    def _middleware(self, app):
        def handle(environ, start_response):
            with self._count_lock:
                index = len(self.requests)
                request = Request(
                    environ["REQUEST_METHOD"],
                    unquote(environ["PATH_INFO"]),
                    environ["QUERY_STRING"],
                    False,
                    environ.get("HTTP_X_AMZ_SERVER_SIDE_ENCRYPTION"),
                )
                failing = self._fail_from is not None and index >= self._fail_from
                if not failing and self._matching is not None and self._matching[1] > 0 and self._matching[0](request):
                    failing, self._matching = True, (self._matching[0], self._matching[1] - 1)
                self.requests.append(dataclasses.replace(request, failed=failing))
            if failing:
                if self._fail_from is None or index < self._fail_from:  # a picked request: an error, never a stop
                    start_response("500 Internal Server Error", [("Content-Type", "application/xml")])
                    return [b"<Error><Code>InternalError</Code><Message>injected fault</Message></Error>"]
                return self._fail(environ, start_response)
            if "HTTP_IF_MATCH" in environ or "HTTP_IF_NONE_MATCH" in environ:
                with self._write_lock:
                    return list(app(environ, start_response))
            return app(environ, start_response)

        return handle

    def _fail(self, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length:
            environ["wsgi.input"].read(length)
        if self._mode == "stop":
            sock = environ.get("werkzeug.socket")
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
            with self._count_lock:
                stop_now = not self._stopped
                self._stopped = True
            if stop_now:
                self._stopper = threading.Thread(target=self._stop_listening, daemon=True)
                self._stopper.start()
            # Nothing reaches the client: its socket is shut; werkzeug drops the write quietly.
            start_response("503 Service Unavailable", [])
            return []
        start_response("500 Internal Server Error", [("Content-Type", "application/xml")])
        return [b"<Error><Code>InternalError</Code><Message>injected fault</Message></Error>"]

    def _stop_listening(self) -> None:
        super().stop()
        self._server.server_close()

    def fail_from(self, index: int, mode: FaultMode) -> None:
        """Fail request number ``index`` (0-based, over the endpoint's life) and every later one."""
        self._mode = mode
        self._fail_from = index

    def fail_matching(self, predicate: Callable[[Request], bool], times: int) -> None:
        """Answer 500 InternalError to the next ``times`` requests ``predicate`` picks."""
        with self._count_lock:
            self._matching = (predicate, times)

    def heal(self) -> None:
        """Answer normally again; restart listening if a "stop" fault shut the endpoint down."""
        if self._stopped:
            assert self._stopper is not None
            self._stopper.join()
            self.start()
        with self._count_lock:
            self._fail_from = None
            self._matching = None
            self._stopped = False

    def stop(self) -> None:
        if not self._stopped:
            self._stop_listening()
