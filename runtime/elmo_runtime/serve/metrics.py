"""The service's Prometheus metrics (prometheus_client), one registry per app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from .batcher import BatchStats

CONTENT_TYPE = CONTENT_TYPE_LATEST
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SENTENCES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TOKENS = (16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384)


class Metrics:
    """Counters, gauges and histograms of one running service.

    ``elmo_requests_total{endpoint,code}``, ``elmo_request_duration_seconds``,
    ``elmo_queue_time_seconds`` (per sentence, queued to batch start),
    ``elmo_queue_size`` (sentences waiting), ``elmo_requests_in_flight``,
    ``elmo_batch_size`` (sentences per model run), ``elmo_batch_tokens``
    (tokens per model run), ``elmo_batch_duration_seconds``,
    ``elmo_tokens_embedded_total`` and ``elmo_padded_steps_total`` (steps
    run, padding included), ``elmo_connections_closed_total{reason}`` (closed by the
    connection limits: refused, evicted, idle_timeout, header_timeout, send_timeout,
    accept_failed, bad_request). Answers given before a request was read (503 at the
    connection cap, 408 at the head deadline, 400 for a request that cannot be parsed)
    count under ``endpoint="(connection)"``.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "elmo_requests", "HTTP requests answered.", ["endpoint", "code"], registry=r
        )
        self.duration = Histogram(
            "elmo_request_duration_seconds",
            "Time from a request's arrival to its answer.",
            ["endpoint"],
            buckets=SECONDS,
            registry=r,
        )
        self.queue_time = Histogram(
            "elmo_queue_time_seconds",
            "Time a sentence waited in the queue before its batch started.",
            buckets=SECONDS,
            registry=r,
        )
        self.queue_size = Gauge("elmo_queue_size", "Sentences waiting for the model.", registry=r)
        self.in_flight = Gauge(
            "elmo_requests_in_flight",
            "Embedding requests whose body has arrived, not yet answered.",
            registry=r,
        )
        self.reading = Gauge(
            "elmo_requests_reading",
            "Embedding requests still receiving their body (within --body-timeout).",
            registry=r,
        )
        self.batch_size = Histogram(
            "elmo_batch_size", "Sentences per model run.", buckets=SENTENCES, registry=r
        )
        self.batch_tokens = Histogram(
            "elmo_batch_tokens",
            "Tokens per model run (boundaries excluded).",
            buckets=TOKENS,
            registry=r,
        )
        self.batch_duration = Histogram(
            "elmo_batch_duration_seconds", "Time of one model run.", buckets=SECONDS, registry=r
        )
        self.tokens = Counter("elmo_tokens_embedded", "Tokens embedded.", registry=r)
        self.connections = Counter(
            "elmo_connections_closed",
            "Connections closed by the connection limits, by reason.",
            ["reason"],
            registry=r,
        )
        self.padded = Counter(
            "elmo_padded_steps",
            "Steps the model ran, padding and boundaries included (tokens / this: efficiency).",
            registry=r,
        )

    def observe_batch(self, stats: BatchStats) -> None:
        """Record one model run."""
        self.batch_size.observe(stats.sentences)
        self.batch_tokens.observe(stats.tokens)
        self.batch_duration.observe(stats.seconds)
        self.tokens.inc(stats.tokens)
        self.padded.inc(stats.padded_steps)
        for seconds in stats.queue_times:
            self.queue_time.observe(seconds)

    def observe_request(self, endpoint: str, code: int, seconds: float) -> None:
        """Record one answered request."""
        self.requests.labels(endpoint=endpoint, code=str(code)).inc()
        self.duration.labels(endpoint=endpoint).observe(seconds)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
