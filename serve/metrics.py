"""The server's Prometheus metrics, in a registry of its own (one per app, so tests can run several)."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from serve.model import LoadedVersion
from serve.requestlog import LogCounters

# Latency buckets from half a millisecond to ten seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServerMetrics:
    """Requests, batches, the queue, the served version, load and log-write failures."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("lepton_serve_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r)
        self.latency = Histogram(
            "lepton_serve_request_duration_seconds", "Request latency by endpoint and status", ["endpoint", "status"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram("lepton_serve_batch_size", "Rows per model call", buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("lepton_serve_queue_depth", "Rows waiting for the model", registry=r)
        self.in_flight = Gauge("lepton_serve_in_flight_requests", "Requests being served", registry=r)
        self.model_info = Gauge(
            "lepton_serve_model_info", "The version in service and the variant this host chose (1)",
            ["model", "version", "variant", "runtime", "precision"], registry=r,
        )
        self.swaps = Counter("lepton_serve_model_swaps", "Versions put in service", ["model"], registry=r)
        self.load_failures = Counter("lepton_serve_model_load_failures", "Versions refused", ["model"], registry=r)
        self.log_rows = Counter("lepton_serve_log_rows_written", "Served rows written to the monitoring logs", registry=r)
        self.log_failures = Counter("lepton_serve_log_write_failures", "Failed writes of monitoring log objects", registry=r)
        self.log_dropped = Counter("lepton_serve_log_rows_dropped", "Served rows not logged (buffer full)", registry=r)
        self.log_pending = Gauge("lepton_serve_log_rows_pending", "Served rows waiting to be written", registry=r)
        self._seen = LogCounters()
        self._lock = threading.Lock()  # the request log reports from its own thread

    def observe_log(self, counters: LogCounters) -> None:
        """Advance the log counters to the request log's totals."""
        with self._lock:
            self._observe(counters)

    def _observe(self, live: LogCounters) -> None:
        counters = LogCounters(**vars(live))  # one snapshot: the writer thread may move on meanwhile
        self.log_rows.inc(counters.written_rows - self._seen.written_rows)
        self.log_failures.inc(counters.write_failures - self._seen.write_failures)
        self.log_dropped.inc(counters.dropped_rows - self._seen.dropped_rows)
        self.log_pending.set(counters.pending_rows)
        self._seen = counters

    def swapped(self, model: str, old: LoadedVersion | None, new: LoadedVersion) -> None:
        if old is not None:
            self.model_info.remove(*_info_labels(model, old))
        self.model_info.labels(*_info_labels(model, new)).set(1)
        self.swaps.labels(model).inc()


def _info_labels(model: str, loaded: LoadedVersion) -> tuple[str, str, str, str, str]:
    variant = loaded.manifest.variant(loaded.variant)
    return model, loaded.version, loaded.variant, variant.runtime, variant.precision
