"""OpenTelemetry traces: off unless the OTEL_* variables ask (and then nothing of the SDK is
imported); on, a request is a server span named by its route template that continues the
caller's `traceparent`, carries the request id, and holds a child span per SQL statement with
the statement's text and never its parameters."""

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from api.core import tracing
from api.main import create_app
from api.users.models import User
from tests.support.app import ROOT, settings_for_tests
from tests.support.client import bearer
from tests.support.database import Database, query, scalar
from tests.support.logs import captured_log

pytestmark = pytest.mark.concurrent

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
ADDRESS = "42 Traced Lane, Secretville"  # a value the order's statements carry as parameters
SQL_SCOPE = "opentelemetry.instrumentation.sqlalchemy"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced(committed: Database, exporter: InMemorySpanExporter) -> AsyncIterator[FastAPI]:
    """The app through its own lifespan (engine, SQL instrumentation), tracing into memory."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = settings_for_tests(database_url=committed.url)
    app = create_app(settings, tracer_provider=provider)
    with captured_log(settings):
        async with LifespanManager(app):
            yield app


async def a_customer_and_a_lamp(database_url: str) -> tuple[User, int]:
    user_id = await scalar(
        database_url,
        "INSERT INTO users (username, email, hashed_password)"
        " VALUES ('tracy', 't@example.com', 'x') RETURNING id",
    )
    product_id = await scalar(
        database_url,
        "INSERT INTO products (name, slug, sku, price, stock_quantity, is_active)"
        " VALUES ('Traced lamp', 'traced-lamp', 'TRACED-LAMP', 19.99, 5, true) RETURNING id",
    )
    return User(
        id=user_id, username="tracy", email="t@example.com", hashed_password="x"
    ), product_id


def ancestors(span: ReadableSpan, spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    by_id = {s.context.span_id: s for s in spans}
    found = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        found.append(span)
    return found


def everything_recorded(span: ReadableSpan) -> str:
    return json.dumps(
        [dict(span.attributes or {}), [dict(e.attributes or {}) for e in span.events]],
        default=str,
    )


async def test_an_order_is_a_server_span_over_its_sql_spans(
    traced: FastAPI, committed: Database, exporter: InMemorySpanExporter
) -> None:
    customer, lamp = await a_customer_and_a_lamp(committed.url)
    traceparent = f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"
    headers = {**bearer(customer), "traceparent": traceparent, "X-Request-ID": "trace-me"}
    body = {"items": [{"product_id": lamp, "quantity": 2}], "shipping_address": ADDRESS}

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=traced), base_url="http://test"
    ) as client:
        response = await client.post("/orders/", json=body, headers=headers)

    assert response.status_code == 201, response.text
    rows = await query(committed.url, "SELECT user_id, shipping_address FROM orders")
    assert [tuple(row) for row in rows] == [(customer.id, ADDRESS)]
    spans = exporter.get_finished_spans()
    [server] = [span for span in spans if span.kind == SpanKind.SERVER]
    assert server.name == "POST /orders/"
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/orders/"
    assert server.attributes["http.response.status_code"] == 201
    assert server.attributes["request_id"] == "trace-me"
    # The caller's traceparent: the same trace, the caller's span as the parent.
    assert server.parent is not None
    assert server.parent.is_remote
    assert (server.parent.trace_id, server.parent.span_id) == (
        int(TRACE_ID, 16),
        int(CALLER_SPAN_ID, 16),
    )
    assert {span.context.trace_id for span in spans} == {int(TRACE_ID, 16)}

    database = [
        span
        for span in spans
        if span.instrumentation_scope is not None and span.instrumentation_scope.name == SQL_SCOPE
    ]
    assert {span.kind for span in database} == {SpanKind.CLIENT}
    statements = [str((span.attributes or {})["db.statement"]) for span in database[1:]]
    assert database[0].name == "connect"  # the request's connection, then its statements
    verbs = [statement.split()[0] for statement in statements]
    # The caller, the products locked, the stock taken, the order, its items, the
    # notification in a savepoint (api/orders/service.py's eight statements).
    assert verbs == [
        "SELECT",
        "SELECT",
        "UPDATE",
        "INSERT",
        "INSERT",
        "SAVEPOINT",
        "INSERT",
        "RELEASE",
    ], statements
    for span in database:
        assert server in ancestors(span, spans), span.name
    for span in spans:  # no statement's parameters anywhere
        recorded = everything_recorded(span)
        assert ADDRESS not in recorded
        assert "19.99" not in recorded
        assert "parameters" not in recorded


async def test_a_request_without_traceparent_starts_a_trace(
    traced: FastAPI, exporter: InMemorySpanExporter
) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=traced), base_url="http://test"
    ) as client:
        response = await client.get("/products/999999")

    [server] = [span for span in exporter.get_finished_spans() if span.kind == SpanKind.SERVER]
    assert server.name == "GET /products/{product_id}"
    assert server.parent is None
    assert server.attributes is not None
    assert server.attributes["request_id"] == response.headers["x-request-id"]


def test_off_unless_the_environment_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    assert not tracing.requested()
    assert tracing.provider_from_environment() is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert tracing.requested()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert not tracing.requested()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert tracing.requested()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not tracing.requested()


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER=zipkin"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTLP/HTTP",
        ),
    ],
)
def test_an_exporter_it_cannot_use_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        create_app(settings_for_tests())


def imported_by_an_app(environment: dict[str, str]) -> dict[str, Any]:
    """What a fresh interpreter has imported once it built the app and answered a request, and
    whether the app traces."""
    code = (
        "import sys, json, httpx, asyncio\n"
        "from tests.support.app import settings_for_tests\n"
        "from api.main import create_app\n"
        "app = create_app(settings_for_tests())\n"
        "async def ask():\n"
        "    transport = httpx.ASGITransport(app=app)\n"
        "    async with httpx.AsyncClient(transport=transport, base_url='http://t') as c:\n"
        "        await c.get('/health')\n"
        "asyncio.run(ask())\n"
        "traced = app.state.tracer_provider is not None\n"
        "found = {'modules': sorted(sys.modules), 'traced': traced}\n"
        "sys.stderr.write('IMPORTED ' + json.dumps(found) + '\\n')\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, **environment},
        capture_output=True,
        text=True,
        check=True,
    )
    # On stderr in one write: the console exporter prints spans to stdout, from its own thread,
    # and could land between the two writes of a print.
    [line] = [line for line in result.stderr.splitlines() if line.startswith("IMPORTED ")]
    found: dict[str, Any] = json.loads(line.removeprefix("IMPORTED "))
    return found


def test_untraced_the_sdk_and_the_instrumentation_are_never_imported() -> None:
    untraced = imported_by_an_app({})
    traced = imported_by_an_app({"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "1"})

    def otel(modules: list[str]) -> set[str]:
        return {m for m in modules if m.startswith(("opentelemetry.sdk", "opentelemetry.instr"))}

    assert (untraced["traced"], traced["traced"]) == (False, True)
    assert otel(untraced["modules"]) == set()
    assert "opentelemetry.sdk.trace" in otel(traced["modules"])
