"""GET /metrics in the Prometheus text format, documented as such in the OpenAPI schema."""

from __future__ import annotations

import os

from litestar import Controller, Response, get
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

from interfaces.http.observability import flush


class MetricsController(Controller):
    # Litestar's PrometheusController does the same but declares application/json, which
    # schema-driven clients then expect.
    path = "/metrics"

    @get(
        media_type="text/plain",  # the schema names the type; the answer adds its version
        summary="Prometheus metrics",
        tags=["operations"],
        sync_to_thread=False,
    )
    def metrics(self) -> Response[bytes]:
        flush()  # this process's request tallies, so a scrape right after a request sees it
        registry = REGISTRY
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # `signup api --workers N`: add up every worker process's files.
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
