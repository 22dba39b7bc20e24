"""Prometheus metrics of one server (its own collector registry, so several servers in a process never clash)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401 - re-exported for the app

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
DOMAIN_STATUSES = ("ready", "zero-shot", "incompatible", "no core", "broken")
OTHER_DOMAIN = "(other)"  # label for domains the registry does not know: keeps label values bounded


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("unictr_requests", "HTTP requests answered", ["path", "status"],
                                registry=self.registry)
        self.errors = Counter("unictr_request_errors", "HTTP requests answered with a 4xx or 5xx status",
                              ["path", "status"], registry=self.registry)
        self.latency = Histogram("unictr_request_latency_seconds", "Time to answer a request", ["path"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("unictr_batch_size_rows", "Rows per backbone batch (dynamic batching)",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.rows = Counter("unictr_rows", "Rows predicted, per domain and answering network",
                            ["domain", "predicted_by"], registry=self.registry)
        self.generation = Gauge("unictr_registry_generation", "The home's generation being served, the "
                                "number in generations/gNNNNNN (0: none loaded yet)", registry=self.registry)
        self.reload_failures = Gauge("unictr_registry_reload_failures", "Reloads that failed (the previous state "
                                     "kept serving)", registry=self.registry)
        self.ready = Gauge("unictr_ready", "1 once a core is loaded", registry=self.registry)
        self.model_info = Gauge("unictr_model_info", "1 for the precision and quantization the served model "
                                "computes in (LoRA merged into the backbone's weights or not)",
                                ["precision", "quantize", "lora_merged"], registry=self.registry)
        self.domains = Gauge("unictr_domains", "Domains of the registry state being served, per status (broken: "
                             "a bundle or registration that does not load)", ["status"], registry=self.registry)
        self.problems = Gauge("unictr_registry_problems", "Problems of the state being served (broken bundles, "
                              "broken plugins, DSNs that did not load), as GET /v1/domains and the log list them",
                              registry=self.registry)

    def observe_model(self, described: dict) -> None:
        """What the served model computes in (:func:`unictr_core.modeling.fast_path.describe`), as one info row."""
        self.model_info.clear()
        self.model_info.labels(described["precision"], described["quantize"],
                               str(described["lora_merged"]).lower()).set(1)

    def observe_state(self, generation: int, statuses: list[str], problems: int) -> None:
        """The gauges of a newly served state: its generation, its domains per status, its problems."""
        self.generation.set(generation)
        for status in DOMAIN_STATUSES:
            self.domains.labels(status).set(statuses.count(status))
        self.problems.set(problems)

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        self.requests.labels(path, str(status)).inc()
        if status >= 400:
            self.errors.labels(path, str(status)).inc()
        self.latency.labels(path).observe(seconds)

    def observe_rows(self, records: list[dict], known_domains) -> None:
        for record in records:
            domain = record["domain"] if record["domain"] in known_domains else OTHER_DOMAIN
            self.rows.labels(domain, record["predicted_by"]).inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)
