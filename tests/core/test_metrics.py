"""Prometheus metrics: requests by method, route template and status class, latency, in-flight,
the database's connects and checkouts, business counters (counted only once committed), build
info; /metrics for a bearer of METRICS_TOKEN or, without one, loopback clients only, and absent
from the OpenAPI document."""

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import text as sql
from sqlmodel.ext.asyncio.session import AsyncSession

import devstack
from api.core import metrics
from api.core.db import SessionDep, build_engine, use_engine
from api.core.version import VERSION
from api.main import create_app
from api.products.models import Product
from api.users.models import User
from tests.support.app import ROOT, app_without_database, settings_for_tests
from tests.support.client import assert_problem, client_for
from tests.support.database import Database
from tests.support.factories import make_order, make_product, make_user
from tests.support.live_server import serving
from tests.support.logs import captured_log

TOKEN = "a-scraper-token-of-32-characters"
COUNT = "http_request_duration_seconds_count"  # the requests answered


def sample(name: str, **labels: str) -> float:
    """A sample of this process's registry (0 for a series not yet seen)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


@contextmanager
def counting(name: str, **labels: str) -> Iterator[list[float]]:
    """The change of one sample over the block, in the list it yields once the block ends."""
    before = sample(name, **labels)
    change: list[float] = []
    yield change
    change.append(sample(name, **labels) - before)


def scraped(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus' text format, parsed: (sample name, labels) to value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
async def remote_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client on another host."""
    transport = httpx.ASGITransport(app=app, client=("203.0.113.5", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


class TestRequests:
    async def test_counted_by_method_route_template_and_status_class(
        self, client: httpx.AsyncClient
    ) -> None:
        labels = {"method": "GET", "route": "/products/{product_id}"}
        with (
            counting(COUNT, **labels, status="4xx") as client_errors,
            counting(COUNT, **labels, status="2xx") as successes,
            counting(
                "http_request_duration_seconds_bucket", **labels, status="4xx", le="10.0"
            ) as within_ten_seconds,
            counting("http_request_duration_seconds_sum", **labels, status="4xx") as seconds,
        ):
            await client.get("/products/999999")
            await client.get("/products/abc")

        assert (client_errors, successes, within_ten_seconds) == ([2], [0], [2])
        assert 0 < seconds[0] < 10

    async def test_an_unknown_path_is_one_label_never_the_path(
        self, client: httpx.AsyncClient
    ) -> None:
        with counting(COUNT, method="GET", route="unmatched", status="4xx") as n:
            for path in ("/a", "/b/c", "/.env", "/wp-login.php"):
                await client.get(path)

        assert n == [4]
        assert "wp-login" not in (await client.get("/metrics")).text

    async def test_an_unusual_method_is_other(self, client: httpx.AsyncClient) -> None:
        with counting(COUNT, method="other", route="/health", status="4xx") as n:
            await client.request("PROPFIND", "/health")

        assert n == [1]

    async def test_in_flight_counts_the_scrape_itself(self, client: httpx.AsyncClient) -> None:
        samples = scraped((await client.get("/metrics")).text)

        assert samples[("http_requests_in_flight", frozenset())] == 1

    async def test_in_flight_is_published_when_it_falls_and_every_interval_when_it_rose(
        self,
    ) -> None:
        in_flight = metrics.InFlight()
        assert sample("http_requests_in_flight") == 0

        in_flight.started()
        in_flight.started()
        unpublished = sample("http_requests_in_flight")
        async with in_flight.published_every(0.01):
            await asyncio.sleep(0.1)
        busy = sample("http_requests_in_flight")
        in_flight.finished()
        one_left = sample("http_requests_in_flight")
        in_flight.finished()

        assert (unpublished, busy, one_left) == (0, 2, 1)
        assert sample("http_requests_in_flight") == 0

    async def test_requests_answered_leave_none_in_flight(self, client: httpx.AsyncClient) -> None:
        # The scrape publishes a count of at least one (itself) while the others run.
        await asyncio.gather(
            *(client.get("/health") for _ in range(5)), client.get("/metrics"), client.get("/x")
        )

        assert metrics.REQUESTS_IN_FLIGHT.now == 0
        assert sample("http_requests_in_flight") == 0

    async def test_latency_buckets_run_from_a_millisecond_to_ten_seconds(
        self, client: httpx.AsyncClient
    ) -> None:
        await client.get("/health")
        samples = scraped((await client.get("/metrics")).text)

        bounds = sorted(
            float(dict(labels)["le"])
            for name, labels in samples
            if name == "http_request_duration_seconds_bucket"
            and {("method", "GET"), ("route", "/health"), ("status", "2xx")} <= labels
        )
        assert bounds[0] == 0.001
        assert bounds[-2:] == [10.0, float("inf")]


class TestTheEndpoint:
    async def test_answers_a_loopback_client_in_prometheus_text_format(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/metrics")

        assert response.status_code == 200
        assert response.headers["content-type"] == CONTENT_TYPE_LATEST  # the text format
        names = {name for name, _ in scraped(response.text)}
        assert {COUNT, "storefront_orders_placed_total"} <= names
        assert not any(name.endswith("_created") for name in names)

    async def test_refuses_another_host_without_a_token(
        self, remote_client: httpx.AsyncClient
    ) -> None:
        response = await remote_client.get("/metrics")

        assert_problem(response, 403, "forbidden")
        assert "http_request_duration_seconds" not in response.text

    @pytest.mark.parametrize(
        "relayed",
        [{"X-Forwarded-For": "127.0.0.1"}, {"Forwarded": "for=127.0.0.1"}],
    )
    async def test_refuses_a_request_relayed_by_a_proxy_without_a_token(
        self, client: httpx.AsyncClient, relayed: dict[str, str]
    ) -> None:
        assert_problem(await client.get("/metrics", headers=relayed), 403, "forbidden")

    async def test_is_not_in_the_openapi_document(self, app: FastAPI) -> None:
        assert "/metrics" not in app.openapi()["paths"]


class TestWithAToken:
    @pytest.fixture
    def app(self, app: FastAPI) -> FastAPI:
        guarded = create_app(
            app.state.settings.model_copy(update={"metrics_token": SecretStr(TOKEN)})
        )
        guarded.state.sessionmaker = app.state.sessionmaker
        return guarded

    @pytest.mark.parametrize(
        "authorization",
        [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer "],
    )
    async def test_refuses_a_missing_or_wrong_one(
        self, client: httpx.AsyncClient, authorization: str | None
    ) -> None:
        headers = {"Authorization": authorization} if authorization else {}

        response = await client.get("/metrics", headers=headers)

        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
        assert TOKEN not in response.text

    async def test_answers_its_bearer_from_any_host(self, remote_client: httpx.AsyncClient) -> None:
        response = await remote_client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})

        assert response.status_code == 200
        assert COUNT in response.text


async def test_metrics_off_serve_no_endpoint_and_count_nothing() -> None:
    app = create_app(settings_for_tests(metrics_enabled=False))

    with counting(COUNT, method="GET", route="/health", status="2xx") as n:
        async with client_for(app) as client:
            await client.get("/health")
            assert_problem(await client.get("/metrics"), 404, "not_found")

    assert n == [0]


class TestBusinessCounters:
    async def test_a_sign_up_counts_once_a_refused_one_never(
        self, client: httpx.AsyncClient
    ) -> None:
        body = {"username": "counted", "email": "counted@example.com", "password": "p" * 12}
        with counting("storefront_sign_ups_total") as n:
            assert (await client.post("/users/", json=body)).status_code == 201
            assert (await client.post("/users/", json=body)).status_code == 409

        assert n == [1]

    async def test_failed_logins_count_by_reason(
        self, app: FastAPI, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        await make_user(session, username="guessed")
        app.state.settings.login_max_failures = 2
        wrong = {"username": "guessed", "password": "not-it"}
        with (
            counting("storefront_failed_logins_total", reason="bad_credentials") as bad,
            counting("storefront_failed_logins_total", reason="throttled") as throttled,
        ):
            for _ in range(3):
                await client.post("/auth/token", data=wrong)

        assert (bad, throttled) == ([2], [1])

    @pytest.fixture
    async def lamp(self, session: AsyncSession) -> Product:
        return await make_product(session, name="Counted lamp", stock=3)

    async def test_an_order_placed_counts_once_a_refused_one_never(
        self, app: FastAPI, session: AsyncSession, lamp: Product
    ) -> None:
        customer = await make_user(session)
        line = {"product_id": lamp.id, "quantity": 2}
        with counting("storefront_orders_placed_total") as n:
            async with client_for(app, customer) as client:
                placed = await client.post("/orders/", json={"items": [line]})
                refused = await client.post("/orders/", json={"items": [line]})

        assert (placed.status_code, refused.status_code) == (201, 409)
        assert n == [1]

    async def test_a_cancel_counts_a_move_on_does_not(
        self, app: FastAPI, session: AsyncSession, admin: User, lamp: Product
    ) -> None:
        customer = await make_user(session)
        cancelled = await make_order(session, user=customer, products=[lamp])
        confirmed = await make_order(session, user=customer, products=[lamp])
        with counting("storefront_orders_cancelled_total") as n:
            async with client_for(app, admin) as client:
                for order, status in ((cancelled, "cancelled"), (confirmed, "confirmed")):
                    moved = await client.patch(
                        f"/orders/{order.id}/status", params={"new_status": status}
                    )
                    assert moved.status_code == 200

        assert n == [1]

    async def test_a_request_that_fails_after_the_count_is_registered_counts_nothing(
        self, database: Database
    ) -> None:
        """The count waits for the commit: a transaction rolled back afterwards counts 0."""
        app = create_app(settings_for_tests())

        @app.post("/counted-then-failed")
        async def counted_then_failed(session: SessionDep) -> None:
            metrics.count_on_commit(session, metrics.SIGN_UPS)
            raise RuntimeError("after the count")

        engine = build_engine(app.state.settings, url=database.url)
        use_engine(app, engine)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        try:
            with counting("storefront_sign_ups_total") as n:
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                    assert (await http.post("/counted-then-failed")).status_code == 500
        finally:
            await engine.dispose()

        assert n == [0]


class TestCountsAndSavepoints:
    """A count registered in a savepoint stands or falls with it: a keyed request whose work
    is refused rolls its savepoint back and still commits (the stored answer)."""

    @pytest.fixture
    async def own_session(self, database: Database) -> AsyncIterator[AsyncSession]:
        engine = build_engine(settings_for_tests(), url=database.url)
        try:
            async with AsyncSession(engine) as session:
                yield session
        finally:
            await engine.dispose()

    @pytest.mark.parametrize(("kept", "counted"), [(True, 1), (False, 0)])
    async def test_a_count_in_a_savepoint_follows_the_savepoint(
        self, own_session: AsyncSession, kept: bool, counted: int
    ) -> None:
        with counting("storefront_sign_ups_total") as n:
            savepoint = await own_session.begin_nested()
            inner = await own_session.begin_nested()  # the work's own, released
            metrics.count_on_commit(own_session, metrics.SIGN_UPS)
            await inner.commit()
            await (savepoint.commit() if kept else savepoint.rollback())
            await own_session.commit()

        assert n == [counted]

    async def test_a_count_outside_the_savepoint_rolled_back_stands(
        self, own_session: AsyncSession
    ) -> None:
        with counting("storefront_sign_ups_total") as n:
            metrics.count_on_commit(own_session, metrics.SIGN_UPS)
            await (await own_session.begin_nested()).rollback()
            await own_session.commit()

        assert n == [1]


class TestDatabase:
    @pytest.mark.parametrize(
        ("pool", "connects", "checkouts"),
        # NullPool: a new connection per request, timed as such; a pool keeps one, and a
        # request's wait for it is timed.
        [("null", 3, 0), ("queue", 1, 3)],
    )
    async def test_each_pooled_checkout_is_timed_and_each_new_connection(
        self, database: Database, pool: str, connects: int, checkouts: int
    ) -> None:
        settings = settings_for_tests(database_url=database.url, db_pool=pool, db_pool_size=1)
        app = create_app(settings)
        with (
            counting("storefront_db_connect_seconds_count", database="primary") as connected,
            counting("storefront_db_acquire_seconds_count", database="primary") as checked_out,
            captured_log(settings),
        ):
            async with LifespanManager(app), client_for(app) as client:
                for _ in range(3):
                    assert (await client.get("/health/ready")).status_code == 200

        assert (connected, checked_out) == ([connects], [checkouts])

    @pytest.mark.parametrize(("pool", "failed_checkouts"), [("queue", 1), ("null", 0)])
    async def test_a_refused_connection_is_a_connect_error_and_a_pooled_checkouts(
        self, pool: str, failed_checkouts: int
    ) -> None:
        app = app_without_database("postgresql+asyncpg://nobody:x@127.0.0.1:1/none", db_pool=pool)
        with (
            counting("storefront_db_connect_errors_total", database="primary") as connects,
            counting("storefront_db_acquire_errors_total", database="primary") as checkouts,
        ):
            async with client_for(app) as client:
                assert_problem(await client.get("/health/ready"), 503, "database_unavailable")

        assert (connects, checkouts) == ([1], [failed_checkouts])

    async def test_a_replicas_connections_are_its_own(self, database: Database) -> None:
        """The read replica's engine (and its background check) counts as `replica`: its
        outage never reads as the primary's."""
        settings = settings_for_tests(database_url=database.url, db_pool="queue")
        replica = build_engine(settings, url=database.url, database="replica")
        refused = build_engine(
            settings, url="postgresql+asyncpg://nobody:x@127.0.0.1:1/none", database="replica"
        )
        try:
            with (
                counting("storefront_db_connect_seconds_count", database="replica") as connected,
                counting("storefront_db_acquire_seconds_count", database="replica") as acquired,
                counting("storefront_db_connect_errors_total", database="replica") as failed,
                counting("storefront_db_acquire_seconds_count", database="primary") as primary,
                counting(
                    "storefront_db_connect_errors_total", database="primary"
                ) as primary_errors,
            ):
                async with replica.connect() as connection:
                    await connection.execute(sql("SELECT 1"))
                with pytest.raises(ConnectionRefusedError):
                    async with refused.connect():
                        pass
        finally:
            await replica.dispose()
            await refused.dispose()

        assert (connected, acquired, failed) == ([1], [1], [1])
        assert (primary, primary_errors) == ([0], [0])


async def test_build_info_names_the_version_and_the_commit(database: Database) -> None:
    settings = settings_for_tests(database_url=database.url, git_sha="0123abc")
    app = create_app(settings)
    with captured_log(settings):
        async with LifespanManager(app):
            pass

    assert sample("storefront_build_info", version=VERSION, git_sha="0123abc") == 1


def gone_process_counted(directory: Path, code: str) -> None:
    """A process that counted in `directory` (`code`, given `metrics`) and has ended: its
    files stay behind, as a previous server's or a killed worker's do."""
    subprocess.run(
        [sys.executable, "-c", f"from api.core import metrics; {code}"],
        cwd=ROOT,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
        check=True,
    )


def counted_by_each_process(directory: Path, route: str) -> dict[str, float]:
    """The requests to `route` each process's histogram file holds, by pid."""
    counts = {}
    for path in directory.glob("histogram_*.db"):
        merged = MultiProcessCollector.merge([str(path)])  # type: ignore[no-untyped-call]
        counts[path.stem.split("_")[1]] = sum(
            s.value
            for m in merged
            for s in m.samples
            if s.name == COUNT and s.labels.get("route") == route
        )
    return counts


# A connection per request: uvicorn's workers take turns accepting, so requests reach both.
SPREAD_OVER_WORKERS = httpx.Limits(max_keepalive_connections=0)


@pytest.fixture
def metrics_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "metrics"
    directory.mkdir()
    return directory


@contextmanager
def two_workers(
    committed: Database,
    app_pgbouncer: devstack.PgBouncer,
    metrics_dir: Path,
    **env: str,
) -> Iterator[str]:
    """The server as the image starts it (`python -m api serve`), with two workers counting
    into `metrics_dir`; its URL. Its log goes beside the directory."""
    with serving(
        committed,
        app_pgbouncer,
        metrics_dir.parent,
        True,
        WEB_CONCURRENCY="2",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        **env,
    ) as url:
        yield url


@pytest.mark.concurrent
@pytest.mark.pgbouncer
async def test_two_workers_are_scraped_as_one(
    committed: Database, app_pgbouncer: devstack.PgBouncer, metrics_dir: Path
) -> None:
    """The image's way: `python -m api serve` empties PROMETHEUS_MULTIPROC_DIR (a previous
    run's counts are gone), uvicorn starts two workers, and every scrape, whichever worker
    answers it, sums both; the live gauge of a worker that is gone is left out."""
    gone_process_counted(metrics_dir, "metrics.ORDERS_PLACED.inc(1000); metrics.IN_FLIGHT.inc(7)")
    route = "/health/ready"
    sent = 0
    with two_workers(committed, app_pgbouncer, metrics_dir, GIT_SHA="live-sha") as url:
        async with httpx.AsyncClient(base_url=url, limits=SPREAD_OVER_WORKERS) as http:
            for _ in range(50):  # until both workers have answered some, for at most 500
                answers = await asyncio.gather(*(http.get(route) for _ in range(10)))
                assert [a.status_code for a in answers] == [200] * 10
                sent += 10
                if sum(n > 0 for n in counted_by_each_process(metrics_dir, route).values()) == 2:
                    break
                await asyncio.sleep(0.2)
            for i in range(3):
                body = {
                    "username": f"live{i}",
                    "email": f"live{i}@example.com",
                    "password": "p" * 12,
                }
                assert (await http.post("/users/", json=body)).status_code == 201
            # A worker killed mid-request.
            gone_process_counted(metrics_dir, "metrics.IN_FLIGHT.inc(5)")
            scrapes = [(await http.get("/metrics")).text for _ in range(6)]

    assert sum(n > 0 for n in counted_by_each_process(metrics_dir, route).values()) == 2
    ready = frozenset({("method", "GET"), ("route", route), ("status", "2xx")})
    build = frozenset({("version", VERSION), ("git_sha", "live-sha")})
    for text in scrapes:
        samples = scraped(text)
        assert samples[(COUNT, ready)] == sent
        assert samples[("http_request_duration_seconds_sum", ready)] > 0
        assert samples[("storefront_sign_ups_total", frozenset())] == 3
        assert samples[("storefront_orders_placed_total", frozenset())] == 0
        assert samples[("http_requests_in_flight", frozenset())] == 1  # the scrape itself
        assert samples[("storefront_build_info", build)] == 1


@pytest.mark.concurrent
@pytest.mark.pgbouncer
async def test_a_busy_workers_request_in_flight_reaches_every_scrape(
    committed: Database, app_pgbouncer: devstack.PgBouncer, metrics_dir: Path
) -> None:
    """A request whose body is still arriving is in flight in one worker, which publishes it
    within about a second, unscraped; then every scrape counts it, whichever worker answers,
    and none once it is answered."""
    rest_of_body = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"username": "slowbody", "email": "slowbody@example.com", '
        await rest_of_body.wait()
        yield b'"password": "pppppppppppp"}'

    with two_workers(committed, app_pgbouncer, metrics_dir) as url:
        async with (
            httpx.AsyncClient(base_url=url) as slow,
            httpx.AsyncClient(base_url=url, limits=SPREAD_OVER_WORKERS) as http,
        ):
            headers = {"Content-Type": "application/json"}
            sign_up = asyncio.create_task(
                slow.post("/users/", content=slow_body(), headers=headers)
            )
            for _ in range(200):  # until its worker publishes it, unscraped (10 s at most)
                if published_in_flight(metrics_dir) == 1:
                    break
                await asyncio.sleep(0.05)
            published = published_in_flight(metrics_dir)
            while_busy = [(await http.get("/metrics")).text for _ in range(6)]
            rest_of_body.set()
            answer = await sign_up
            after = [(await http.get("/metrics")).text for _ in range(6)]

    assert published == 1
    assert answer.status_code == 201
    in_flight: tuple[str, frozenset[tuple[str, str]]] = ("http_requests_in_flight", frozenset())
    assert [scraped(text)[in_flight] for text in while_busy] == [2] * 6  # with the scrape
    assert [scraped(text)[in_flight] for text in after] == [1] * 6


def published_in_flight(directory: Path) -> float:
    """The requests in flight the workers' files hold, summed."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return registry.get_sample_value("http_requests_in_flight") or 0.0


def test_a_dead_workers_gauge_removed_by_a_scrape_at_once_is_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two scrapes at once both find a dead worker's live gauge; the one that removes it second
    finds it gone (FileNotFoundError), and still answers."""
    monkeypatch.setattr(metrics, "MULTIPROCESS_DIR", str(tmp_path))
    gauge = MmapedDict(str(tmp_path / "gauge_livesum_999999.db"))  # type: ignore[no-untyped-call]
    gauge.close()  # type: ignore[no-untyped-call]  # a gauge file, empty
    monkeypatch.setattr(metrics, "_alive", lambda pid: False)

    def gone(path: str) -> None:
        raise FileNotFoundError(path)

    monkeypatch.setattr("prometheus_client.multiprocess.os.remove", gone)

    assert metrics.exposition() == b""


def test_an_empty_multiprocess_dir_counts_in_memory_and_writes_no_files(tmp_path: Path) -> None:
    """`PROMETHEUS_MULTIPROC_DIR=` is unset, as the launcher and .env.example take it:
    prometheus-client alone would count in files in the working directory (in the image, a
    read-only one)."""
    code = (
        "import api.main; from api.core import metrics; metrics.ORDERS_PLACED.inc(3); "
        "print(metrics.exposition().decode())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": "", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )

    assert scraped(result.stdout)[("storefront_orders_placed_total", frozenset())] == 3
    assert list(tmp_path.iterdir()) == []
