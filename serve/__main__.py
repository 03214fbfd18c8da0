"""``python -m serve``: serve a model's production release over HTTP (see ``--help``)."""

from __future__ import annotations

import argparse
import gc
import json
import math
import logging
import os
import signal
import sys
from pathlib import Path

from pydantic import ValidationError

from serve.config import TOKEN_ENV, InsecureBinding, ServeConfig, resolve_token

log = logging.getLogger("lepton.serve")


def parse_args(argv: list[str]) -> ServeConfig:
    """The config from ``--config FILE`` (JSON) overridden by flags; defaults serve the demo's production release."""
    parser = argparse.ArgumentParser(prog="python -m serve", description=__doc__)
    parser.add_argument("--config", type=Path, help="a JSON file with ServeConfig fields")
    parser.add_argument("--model", dest="model_name", help="registry name (default: digits-classifier)")
    parser.add_argument("--store", help="file://path or s3://bucket/prefix (default: file://.lepton/registry)")
    parser.add_argument("--endpoint-url", help="S3-compatible endpoint")
    parser.add_argument("--host", help="interface to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (default: 8080)")
    parser.add_argument("--work-dir", help="verified downloads (default: .lepton/serve)")
    parser.add_argument("--poll-seconds", type=float, help="how often the production alias is read (default: 5)")
    parser.add_argument("--max-batch-size", type=int, help="rows per model call; 1 turns batching off (default: 32)")
    parser.add_argument("--max-queue-delay-ms", type=float, help="longest a batch waits for more rows (default: 2)")
    parser.add_argument("--threads", type=int, help="intra-op threads of the runtime")
    parser.add_argument("--no-request-log", action="store_true", help="do not log served requests for monitoring")
    parser.add_argument("--no-host-timing", action="store_true",
                        help="serve the build's chosen variant without timing the release's candidates here")
    parser.add_argument("--allow-unauthenticated", action="store_true",
                        help=f"serve a non-loopback interface without {TOKEN_ENV} (behind an authenticating proxy only)")
    args = parser.parse_args(argv)
    data = json.loads(args.config.read_text()) if args.config else {}
    top = {"model_name": args.model_name, "host": args.host, "port": args.port, "work_dir": args.work_dir,
           "poll_seconds": args.poll_seconds, "threads": args.threads}
    data.update({k: v for k, v in top.items() if v is not None})
    if args.allow_unauthenticated:
        data["allow_unauthenticated"] = True
    store = {"uri": args.store, "endpoint_url": args.endpoint_url}
    data["store"] = {**data.get("store", {}), **{k: v for k, v in store.items() if v is not None}}
    batching = {"max_batch_size": args.max_batch_size, "max_queue_delay_ms": args.max_queue_delay_ms}
    data["batching"] = {**data.get("batching", {}), **{k: v for k, v in batching.items() if v is not None}}
    if args.no_host_timing:
        data["variant_choice"] = {**data.get("variant_choice", {}), "measure": False}
    if args.no_request_log:
        data["request_log"] = {**data.get("request_log", {}), "enabled": False}
    return ServeConfig.model_validate(data)


def configure_logging() -> None:
    """Server lines with time and level; access lines are one JSON object each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("lepton.serve")
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    root.propagate = False
    access = logging.getLogger("lepton.serve.access")
    access_handler = logging.StreamHandler(sys.stdout)
    access_handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(access_handler)
    access.propagate = False


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from serve.app import create_app

    configure_logging()
    try:
        config = parse_args(sys.argv[1:] if argv is None else argv)
        token = resolve_token(config, dict(os.environ))
    except (ValidationError, InsecureBinding, OSError, json.JSONDecodeError) as exc:
        print(f"cannot start the model server: {exc}", file=sys.stderr)
        return 2
    if token is None:
        log.warning("%s is not set: requests are not authenticated (the server listens on %s only)", TOKEN_ENV, config.host)
    # The model thread needs the GIL back the moment its runtime call returns; with Python's default
    # 5 ms switch interval it would wait for the busy event loop to yield, stalling every batch.
    # Measured in benchmarks/serving.py: 0.5 ms raised throughput at concurrency 32 by about a fifth.
    sys.setswitchinterval(0.0005)
    app = create_app(config, token)
    # Everything imported so far lives as long as the process: keep the collector from walking it again
    # on every full collection, which stalled requests for tens of milliseconds (p99 in benchmarks/serving.py).
    gc.collect()
    gc.freeze()
    log.info(
        "serving the production release of %s from %s on http://%s:%d (V2 protocol under /v2)",
        config.model_name, config.store.uri, config.host, config.port,
    )
    server = uvicorn.Server(uvicorn.Config(
        app, host=config.host, port=config.port, access_log=False, log_level="info",
        timeout_graceful_shutdown=math.ceil(config.drain_seconds), lifespan="on",
    ))
    # uvicorn drains on SIGTERM/SIGINT, then re-raises the signal to the handler it found: a quiet one
    # makes a graceful shutdown exit 0 (no KeyboardInterrupt traceback on Ctrl-C).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    server.run()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
