"""OpenTelemetry traces, off unless the standard `OTEL_*` variables ask for them.

Asked for (an OTLP endpoint, or `OTEL_TRACES_EXPORTER` other than `none`), each request is a
server span named by its route template (FastAPI's own telemetry, which also honours an incoming
W3C `traceparent`), each SQL statement a child span (opentelemetry-instrumentation-sqlalchemy:
the statement's text, never its parameters), and the request id an attribute of the server
span. The SDK reads the rest of the standard variables itself: `OTEL_EXPORTER_OTLP_*` (endpoint,
headers, timeout, compression, certificate), `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`. Not asked for, nothing of the SDK or the instrumentation is
imported, and FastAPI's telemetry is off (opentelemetry-api, which FastAPI imports anyway, is
all that is loaded).
"""

import os
from typing import TYPE_CHECKING

from fastapi.telemetry import TelemetryConfig
from opentelemetry import trace
from starlette.types import ASGIApp, Receive, Scope, Send

from api.core.request_id import current as current_request_id

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opentelemetry.sdk.trace import TracerProvider
    from sqlalchemy.ext.asyncio import AsyncEngine

REQUEST_ID_ATTRIBUTE = "request_id"  # the access log's and the problem body's name for it
OFF: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False, "auto_configure": False}


def requested() -> bool:
    """Whether the environment asks for traces, as OpenTelemetry's variables say it."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return bool(exporter) or any(os.environ.get(name) for name in endpoints)


def provider_from_environment() -> "TracerProvider | None":
    """A tracer provider exporting as the environment says, or None when it asks for none.

    `OTEL_TRACES_EXPORTER`: `otlp` (the default) over HTTP/protobuf, or `console`; the gRPC
    protocol is not installed, and asking for it stops the start with a message saying so."""
    if not requested():
        return None
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    name = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    exporter: SpanExporter
    if name == "console":
        exporter = ConsoleSpanExporter()
    elif name == "otlp":
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
        )
        if protocol != "http/protobuf":
            raise ValueError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: traces are exported over OTLP/HTTP "
                "(http/protobuf) only; point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's "
                "HTTP port (4318)"
            )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        raise ValueError(f"OTEL_TRACES_EXPORTER={name}: the API exports to otlp or console")
    provider = TracerProvider()  # its resource and sampler from the environment
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def telemetry(provider: "TracerProvider | None") -> TelemetryConfig:
    """FastAPI's telemetry: server spans for `provider`'s traces, or off. FastAPI's own metrics
    and logs stay off: Prometheus and the access log have them."""
    if provider is None:
        return OFF
    return {"tracer_provider": provider, "metrics": False, "logs": False, "auto_configure": False}


def trace_sql(engines: "Sequence[AsyncEngine]", provider: "TracerProvider") -> None:
    """A child span for each statement the engines run (the primary's, a replica's).

    The instrumentation declares SQLAlchemy up to 2.0 and would refuse 2.1 (logging an error):
    it hooks the engine's cursor events, which 2.1 keeps as they were, so its version check
    is skipped, and tests/core/test_tracing.py holds it to its spans."""
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    SQLAlchemyInstrumentor().instrument(
        engines=[engine.sync_engine for engine in engines],
        tracer_provider=provider,
        skip_dep_check=True,
    )


def stop_tracing_sql() -> None:
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    SQLAlchemyInstrumentor().uninstrument()


class RequestIdOnSpan:
    """The request's id on its server span (inside the request id's middleware, which sets it;
    FastAPI's span wraps every middleware, so it is the current one here)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (request_id := current_request_id()) is not None:
            trace.get_current_span().set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
        await self.app(scope, receive, send)
