"""Generate the Grafana dashboards from the metric names the library defines.

    python dashboards/generate.py           # write dashboards/*.json
    python dashboards/generate.py --check   # exit 1 when the committed JSON is stale

Every query is built from ``otel_resilience._metrics.SPECS`` so the dashboards cannot
drift from the metrics. Variables: ``datasource``, ``job``, ``service`` (the
``service_name`` label of the collector path; empty, and matched by "All", on the direct
``/metrics`` path) and ``dependency``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import stat, statetimeline, timeseries
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DashboardLink,
    DatasourceVariable,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DashboardLinkType,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableRefresh,
)

from otel_resilience._metrics import (
    BREAKER_FAILURE_RATE,
    BREAKER_STATE,
    BREAKER_TRANSITIONS,
    CHAOS_INJECTED,
    CONCURRENCY_INFLIGHT,
    CONCURRENCY_LIMIT,
    CONFIG_RELOADS,
    DEPENDENCY_CALLS,
    DEPENDENCY_FALLBACKS,
    DEPENDENCY_RETRIES,
    FALLBACK_REPLAYED,
    HEALTH_STATUS,
    SPECS,
    TELEMETRY_DROPPED,
)

HERE = Path(__file__).resolve().parent
OVERVIEW_UID = "otel-resilience-overview"
DEPENDENCY_UID = "otel-resilience-dependency"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")

STATE = SPECS[BREAKER_STATE].prometheus
TRANSITIONS = SPECS[BREAKER_TRANSITIONS].prometheus
FAILURE_RATE = SPECS[BREAKER_FAILURE_RATE].prometheus
CALLS = SPECS[DEPENDENCY_CALLS].prometheus
FALLBACKS = SPECS[DEPENDENCY_FALLBACKS].prometheus
REPLAYED = SPECS[FALLBACK_REPLAYED].prometheus
HEALTH = SPECS[HEALTH_STATUS].prometheus
DROPPED = SPECS[TELEMETRY_DROPPED].prometheus
RETRIES = SPECS[DEPENDENCY_RETRIES].prometheus
LIMIT = SPECS[CONCURRENCY_LIMIT].prometheus
INFLIGHT = SPECS[CONCURRENCY_INFLIGHT].prometheus
CHAOS = SPECS[CHAOS_INJECTED].prometheus
RELOADS = SPECS[CONFIG_RELOADS].prometheus

SERVICE = 'job=~"$job", service_name=~"$service"'
DEPENDENCY = SERVICE + ', dependency_name=~"$dependency"'

# The state timeline shows one number per dependency; these are its meanings.
STATE_CODES = {"closed": 0, "half_open": 1, "open": 2, "forced_open": 3, "disabled": 4}
STATE_COLOURS = {
    "closed": "green",
    "half_open": "yellow",
    "open": "red",
    "forced_open": "purple",
    "disabled": "blue",
}


def query(expr: str, legend: str, ref: str = "A") -> Dataquery:
    return Dataquery().expr(expr).legend_format(legend).ref_id(ref)


def variables(dashboard: Dashboard, *, dependency: bool) -> Dashboard:
    dashboard = dashboard.with_variable(
        DatasourceVariable("datasource").label("Data source").type("prometheus")
    )

    def label_values(name: str, label: str, selector: str) -> QueryVariable:
        return (
            QueryVariable(name)
            .label(name.capitalize())
            .datasource(DATASOURCE)
            .query(f"label_values({STATE}{{{selector}}}, {label})")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )

    dashboard = dashboard.with_variable(label_values("job", "job", ""))
    dashboard = dashboard.with_variable(label_values("service", "service_name", 'job=~"$job"'))
    if dependency:
        dashboard = dashboard.with_variable(label_values("dependency", "dependency_name", SERVICE))
    return dashboard


def link(title: str, uid: str) -> DashboardLink:
    return (
        DashboardLink(title)
        .type(DashboardLinkType.LINK)
        .url(f"/d/{uid}")
        .include_vars(True)
        .keep_time(True)
    )


def state_expression(selector: str, by: str) -> str:
    parts = [
        f'{code} * max by ({by}) ({STATE}{{{selector}, breaker_state="{state}"}})'
        for state, code in STATE_CODES.items()
        if code
    ]
    return " + ".join(parts)


def state_mappings() -> list[Any]:
    return [
        ValueMap(
            {
                str(code): ValueMappingResult(text=state, color=STATE_COLOURS[state])
                for state, code in STATE_CODES.items()
            }
        )
    ]


def overview() -> dict[str, Any]:
    by = "job, service_name"
    dashboard = (
        Dashboard("Resilience overview")
        .uid(OVERVIEW_UID)
        .tags(["otel-resilience"])
        .refresh("30s")
        .time("now-1h", "now")
        .link(link("Dependency detail", DEPENDENCY_UID))
    )
    dashboard = variables(dashboard, dependency=False)
    dashboard = (
        dashboard.with_row(Row("Services"))
        .with_panel(
            stat.Panel()
            .title("Health")
            .description("Per service instance: healthy, degraded or unhealthy (DESIGN.md 8).")
            .datasource(DATASOURCE)
            .with_target(
                query(
                    f"2 * max by ({by}, instance) "
                    f'({HEALTH}{{{SERVICE}, health_status="unhealthy"}})'
                    f" + max by ({by}, instance) "
                    f'({HEALTH}{{{SERVICE}, health_status="degraded"}})',
                    "{{job}} {{service_name}} {{instance}}",
                )
            )
            .mappings(
                [
                    ValueMap(
                        {
                            "0": ValueMappingResult(text="healthy", color="green"),
                            "1": ValueMappingResult(text="degraded", color="orange"),
                            "2": ValueMappingResult(text="unhealthy", color="red"),
                        }
                    )
                ]
            )
            .span(8)
            .height(6)
        )
        .with_panel(
            stat.Panel()
            .title("Open breakers")
            .datasource(DATASOURCE)
            .with_target(
                query(
                    f'sum by ({by}) ({STATE}{{{SERVICE}, breaker_state=~"open|forced_open"}})',
                    "{{job}} {{service_name}}",
                )
            )
            .thresholds(
                ThresholdsConfig()
                .mode(ThresholdsMode.ABSOLUTE)
                .steps([Threshold(value=None, color="green"), Threshold(value=1, color="red")])
            )
            .span(8)
            .height(6)
        )
        .with_panel(
            stat.Panel()
            .title("Telemetry dropped (1h)")
            .description("Items dropped while telemetry export was failing.")
            .datasource(DATASOURCE)
            .with_target(
                query(
                    f"sum by ({by}, signal) (increase({DROPPED}{{{SERVICE}}}[1h]))",
                    "{{job}} {{service_name}} {{signal}}",
                )
            )
            .span(8)
            .height(6)
        )
        .with_panel(
            timeseries.Panel()
            .title("Fallback rate")
            .description("Calls answered by a fallback, per second.")
            .datasource(DATASOURCE)
            .unit("reqps")
            .with_target(
                query(
                    f"sum by ({by}, dependency_name) (rate({FALLBACKS}{{{SERVICE}}}[5m]))",
                    "{{job}} {{service_name}} {{dependency_name}}",
                )
            )
            .span(12)
            .height(8)
        )
        .with_panel(
            statetimeline.Panel()
            .title("Breaker states")
            .datasource(DATASOURCE)
            .with_target(
                query(
                    state_expression(SERVICE, "job, service_name, dependency_name"),
                    "{{job}} {{dependency_name}}",
                )
            )
            .mappings(state_mappings())
            .span(12)
            .height(8)
        )
        .with_row(Row("Fleet"))
        .with_panel(
            timeseries.Panel()
            .title("Replicas with the breaker open")
            .description(
                "Per service and dependency, the fraction of replicas whose breaker is open "
                "(the recording rule dependency:resilience_breakers_open:ratio). At or above "
                "half: the dependency is down (ResilienceDependencyDown). Above zero and below "
                "half: some replicas cannot reach it, look at those replicas "
                "(ResiliencePartialReachability)."
            )
            .datasource(DATASOURCE)
            .unit("percentunit")
            .min(0)
            .max(1)
            .thresholds(
                ThresholdsConfig()
                .mode(ThresholdsMode.ABSOLUTE)
                .steps(
                    [
                        Threshold(value=None, color="green"),
                        Threshold(value=0.01, color="orange"),
                        Threshold(value=0.5, color="red"),
                    ]
                )
            )
            .with_target(
                query(
                    f"sum by ({by}, dependency_name) "
                    f'({STATE}{{{SERVICE}, breaker_state=~"open|forced_open"}})'
                    f" / count by ({by}, dependency_name) "
                    f'({STATE}{{{SERVICE}, breaker_state="closed"}})',
                    "{{job}} {{service_name}} {{dependency_name}}",
                )
            )
            .span(16)
            .height(8)
        )
        .with_panel(
            stat.Panel()
            .title("Config reloads (1h)")
            .description(
                "Hot reloads of the resilience config: applied, and failed (the old config stayed)."
            )
            .datasource(DATASOURCE)
            .with_target(
                query(
                    f"sum by ({by}, outcome) (increase({RELOADS}{{{SERVICE}}}[1h]))",
                    "{{job}} {{service_name}} {{outcome}}",
                )
            )
            .span(8)
            .height(8)
        )
    )
    return json.loads(json.dumps(dashboard.build(), cls=JSONEncoder))  # type: ignore[no-any-return]


def dependency_view() -> dict[str, Any]:
    by = "dependency_name"
    dashboard = (
        Dashboard("Resilience: dependency")
        .uid(DEPENDENCY_UID)
        .tags(["otel-resilience"])
        .refresh("30s")
        .time("now-1h", "now")
        .link(link("Overview", OVERVIEW_UID))
    )
    dashboard = variables(dashboard, dependency=True)
    dashboard = (
        dashboard.with_row(Row("Breaker"))
        .with_panel(
            statetimeline.Panel()
            .title("State timeline")
            .datasource(DATASOURCE)
            .with_target(query(state_expression(DEPENDENCY, by), "{{dependency_name}}"))
            .mappings(state_mappings())
            .span(24)
            .height(7)
        )
        .with_panel(
            timeseries.Panel()
            .title("Transitions")
            .description(
                "State changes over 5 minutes. The dots are exemplars: each opening is "
                "recorded in the context of the call that tripped the breaker, so a dot links "
                "to that call's trace (collector path with OpenMetrics, Prometheus with "
                "exemplar storage, and a trace data source on the Prometheus data source)."
            )
            .datasource(DATASOURCE)
            .with_target(
                query(
                    f"sum by ({by}, breaker_from_state, breaker_state) "
                    f"(increase({TRANSITIONS}{{{DEPENDENCY}}}[5m]))",
                    "{{dependency_name}} {{breaker_from_state}} → {{breaker_state}}",
                ).exemplar(True)
            )
            .span(12)
            .height(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Failure rate against the threshold")
            .description(
                "Failures over calls in the breaker's window. The red line is the default "
                "failure_rate_threshold (0.5); a dependency may override it."
            )
            .datasource(DATASOURCE)
            .unit("percentunit")
            .min(0)
            .max(1)
            .thresholds(
                ThresholdsConfig()
                .mode(ThresholdsMode.ABSOLUTE)
                .steps([Threshold(value=None, color="green"), Threshold(value=0.5, color="red")])
            )
            .with_target(
                query(f"max by ({by}) ({FAILURE_RATE}{{{DEPENDENCY}}})", "{{dependency_name}}")
            )
            .span(12)
            .height(8)
        )
        .with_row(Row("Calls"))
        .with_panel(
            timeseries.Panel()
            .title("Calls by outcome")
            .datasource(DATASOURCE)
            .unit("reqps")
            .with_target(
                query(
                    f"sum by ({by}, outcome) (rate({CALLS}{{{DEPENDENCY}}}[1m]))",
                    "{{dependency_name}} {{outcome}}",
                )
            )
            .span(8)
            .height(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Slow calls")
            .datasource(DATASOURCE)
            .unit("reqps")
            .with_target(
                query(
                    f'sum by ({by}) (rate({CALLS}{{{DEPENDENCY}, outcome="slow"}}[1m]))',
                    "{{dependency_name}}",
                )
            )
            .span(8)
            .height(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Fallbacks")
            .datasource(DATASOURCE)
            .unit("reqps")
            .with_target(
                query(
                    f"sum by ({by}, reason, fallback_operation) "
                    f"(rate({FALLBACKS}{{{DEPENDENCY}}}[1m]))",
                    "{{dependency_name}} {{reason}} {{fallback_operation}}",
                )
            )
            .with_target(
                query(
                    f"sum by ({by}, outcome) (rate({REPLAYED}{{{DEPENDENCY}}}[1m]))",
                    "{{dependency_name}} writes {{outcome}}",
                    "B",
                )
            )
            .span(8)
            .height(8)
        )
    )
    dashboard = beyond_breakers(dashboard, by)
    return json.loads(json.dumps(dashboard.build(), cls=JSONEncoder))  # type: ignore[no-any-return]


def beyond_breakers(dashboard: Dashboard, by: str) -> Dashboard:
    """The dependency view's row for retry budgets, concurrency limits and chaos drills."""
    return (
        dashboard.with_row(Row("Retries, limits, chaos"))
        .with_panel(
            timeseries.Panel()
            .title("Retries allowed and denied")
            .description(
                "Retries asked of the retry budget. Denied: the budget is spent or the breaker "
                "is not closed, so callers give up instead of adding load."
            )
            .datasource(DATASOURCE)
            .unit("reqps")
            .with_target(
                query(
                    f"sum by ({by}, outcome) (rate({RETRIES}{{{DEPENDENCY}}}[1m]))",
                    "{{dependency_name}} {{outcome}}",
                )
            )
            .span(6)
            .height(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Concurrency: limit and in flight")
            .description(
                "The concurrency limit (static, or adaptive: it falls when latency rises) and "
                "the calls in flight. In flight at the limit means calls are being rejected."
            )
            .datasource(DATASOURCE)
            .with_target(
                query(f"max by ({by}) ({LIMIT}{{{DEPENDENCY}}})", "{{dependency_name}} limit")
            )
            .with_target(
                query(
                    f"sum by ({by}) ({INFLIGHT}{{{DEPENDENCY}}})",
                    "{{dependency_name}} in flight",
                    "B",
                )
            )
            .span(6)
            .height(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Rejected calls by reason")
            .description("open: the breaker is open; limit: the concurrency limit was reached.")
            .datasource(DATASOURCE)
            .unit("reqps")
            .with_target(
                query(
                    f"sum by ({by}, reject_reason) "
                    f'(rate({CALLS}{{{DEPENDENCY}, outcome="rejected"}}[1m]))',
                    "{{dependency_name}} {{reject_reason}}",
                )
            )
            .span(6)
            .height(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Chaos faults injected")
            .description(
                "Errors and latency injected by a chaos drill (chaos.enabled and "
                "OTEL_RESILIENCE_CHAOS=1). Anything here outside a drill is a misconfiguration."
            )
            .datasource(DATASOURCE)
            .with_target(
                query(
                    f"sum by ({by}, fault) (increase({CHAOS}{{{DEPENDENCY}}}[5m]))",
                    "{{dependency_name}} {{fault}}",
                )
            )
            .span(6)
            .height(8)
        )
    )


DASHBOARDS = {
    "resilience-overview.json": overview,
    "resilience-dependency.json": dependency_view,
}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the JSON is stale")
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path = HERE / name
        text = render(build)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"stale dashboards, run python dashboards/generate.py: {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
