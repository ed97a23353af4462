"""Prometheus metrics of one gateway app (its own registry: no process-wide globals)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass(frozen=True, slots=True)
class GatewayMetrics:
    """The gateway's counters and histograms, all prefixed `tandem_gateway_`."""

    registry: CollectorRegistry
    requests: Counter  # labels: outcome (ok, upstream_error, or the rejection code)
    latency: Histogram  # labels: kind (complete, stream)
    upstream_latency: Histogram
    tokens: Counter  # labels: kind (prompt, completion)
    rejections: Counter  # labels: code (malformed_envelope, replayed_nonce, ...)
    rate_limited: Counter  # labels: limit (requests_per_minute, tokens_per_day)
    uncharged_tokens: Gauge  # tokens served but not yet charged (the usage store was down)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


def create_metrics() -> GatewayMetrics:
    """A fresh registry with every gateway metric."""
    registry = CollectorRegistry(auto_describe=True)
    return GatewayMetrics(
        registry=registry,
        requests=Counter(
            "tandem_gateway_requests",
            "Sealed requests by outcome",
            ["outcome"],
            registry=registry,
        ),
        latency=Histogram(
            "tandem_gateway_request_seconds",
            "Time from request received to response finished",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        ),
        upstream_latency=Histogram(
            "tandem_gateway_upstream_seconds",
            "Time spent waiting on the upstream",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        ),
        tokens=Counter(
            "tandem_gateway_tokens",
            "Tokens served, by kind",
            ["kind"],
            registry=registry,
        ),
        rejections=Counter(
            "tandem_gateway_rejections",
            "Requests rejected before reaching the upstream, by error code",
            ["code"],
            registry=registry,
        ),
        rate_limited=Counter(
            "tandem_gateway_rate_limited",
            "Requests refused by a rate limit or quota",
            ["limit"],
            registry=registry,
        ),
        uncharged_tokens=Gauge(
            "tandem_gateway_uncharged_tokens",
            "Tokens served but not yet charged to a device's quota (the usage store was "
            "unavailable); charged when it is back",
            registry=registry,
        ),
    )
