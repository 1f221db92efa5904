"""The example chat service, run as a user would run it.

The app itself lives in the checkout's demo package (``otel_resilience_demo``, next to the
library; ``otel-resilience demo`` runs it through outages); this file points it at your
servers:

    CHAT_REDIS_URL=redis://127.0.0.1:6379/0 \\
    CHAT_POSTGRES_DSN=postgresql://postgres@127.0.0.1:5432/test \\
    CHAT_ANALYTICS_URL=http://127.0.0.1:8090 \\
    OTEL_RESILIENCE_CONFIG=examples/chat_service/resilience.yaml \\
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 \\
    opentelemetry-instrument python examples/chat_service/app.py

Environment (docs/demo.md has the same list):

- ``PORT``: the port it listens on, on 127.0.0.1 (default 8000).
- ``CHAT_REDIS_URL``, ``CHAT_POSTGRES_DSN``, ``CHAT_ANALYTICS_URL``: its servers (the
  defaults above).
- ``OTEL_RESILIENCE_CONFIG``: the resilience config (default: resilience.yaml here).
- ``OTEL_EXPORTER_OTLP_ENDPOINT``: where ``opentelemetry-instrument``'s exporters send
  traces, metrics and logs (default http://localhost:4317); the usual ``OTEL_*``
  variables apply (``OTEL_TRACES_EXPORTER=none`` and so on when there is no collector).
- ``CHAT_OTLP_ENDPOINT``: for a run with plain ``python`` (no ``opentelemetry-instrument``):
  the app then exports its own spans and metrics by OTLP/gRPC to this endpoint, through
  the resilient exporters. Unset (the default), it exports nothing itself; do not set it
  under ``opentelemetry-instrument``, or spans are exported twice.

(``python examples/chat_service/analytics_stub.py`` gives you an analytics service.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import uvicorn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # the checkout: otel_resilience_demo lives there

from otel_resilience_demo import create_app  # noqa: E402

app = create_app(
    os.environ.get("OTEL_RESILIENCE_CONFIG", str(HERE / "resilience.yaml")),
    redis_url=os.environ.get("CHAT_REDIS_URL", "redis://127.0.0.1:6379/0"),
    postgres_dsn=os.environ.get("CHAT_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
    analytics_url=os.environ.get("CHAT_ANALYTICS_URL", "http://127.0.0.1:8090"),
    otlp_endpoint=os.environ.get("CHAT_OTLP_ENDPOINT"),
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
