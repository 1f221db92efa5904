"""otel_resilience: circuit breakers driven by OpenTelemetry spans."""
