"""The example chat service, run as a user would run it.

The app itself lives in the checkout's demo package (``otel_resilience_demo``, next to the
library; ``otel-resilience demo`` runs it through outages); this file points it at your
servers:

    CHAT_REDIS_URL=redis://127.0.0.1:6379/0 \\
    CHAT_POSTGRES_DSN=postgresql://postgres@127.0.0.1:5432/test \\
    CHAT_ANALYTICS_URL=http://127.0.0.1:8090 \\
    OTEL_RESILIENCE_CONFIG=examples/chat_service/resilience.yaml \\
    opentelemetry-instrument python examples/chat_service/app.py

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
