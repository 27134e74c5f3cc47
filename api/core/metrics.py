"""Prometheus metrics (prometheus-client), served at `GET /metrics`.

With several uvicorn workers every worker counts in files of its own, in the directory named by
`PROMETHEUS_MULTIPROC_DIR` (prometheus-client's multiprocess mode), and a scrape, whichever
worker answers it, sums them. The launcher (`python -m api serve`, the image's command) empties
that directory once, before uvicorn starts its workers: a worker's own start must not, or it
would wipe the counts of the others. Without the variable (in-process tests, a bare `uvicorn`)
the process counts in memory.

Label values are bounded: a method outside HTTP's usual ones is `other`, a path no route has is
`unmatched` (api.core.observability), never the raw path.
"""

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from functools import cache
from pathlib import Path
from time import perf_counter
from typing import Any

if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == "":
    # Empty is unset, as for the launcher and .env.example: prometheus-client, which decides
    # when it is first imported, would take it for multiprocess mode in the working directory
    # (a read-only one in the image).
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]

# Imported here, after the environment is settled.
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from sqlalchemy import event
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.pool import ConnectionPoolEntry, Pool
from sqlalchemy.pool.base import PoolProxiedConnection
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.concurrency import run_in_threadpool

logger = logging.getLogger(__name__)

MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if MULTIPROCESS_DIR:
    # A one-off command in the image (create-superuser) finds no directory the launcher made.
    Path(MULTIPROCESS_DIR).mkdir(parents=True, exist_ok=True)

# The *_created series (a start time per series) are off: half the series, and multiprocess
# mode has none to offer.
disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = CONTENT_TYPE_LATEST
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# From a millisecond (a cached read) to ten seconds (past every database timeout but one).
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

# The requests answered are this histogram's `_count`, as OpenTelemetry's
# `http.server.request.duration` counts them: a counter beside it would be a second write to
# the worker's file per request, for numbers the histogram has.
LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP requests answered and their time from arrival to the answer's last byte, by method, "
    "route template and status class.",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
# Set by InFlight, not on each request.
IN_FLIGHT = Gauge(
    "http_requests_in_flight",
    "HTTP requests being answered, summed over the live workers.",
    multiprocess_mode="livesum",
)
# By `database`: `primary` (DATABASE_URL) or `replica` (DATABASE_READ_URL, whose background
# check connects too), so that a replica's outage never reads as the primary's.
DATABASES = ("primary", "replica")
DB_CONNECT = Histogram(
    "storefront_db_connect_seconds",
    "Time to open a database connection (to PgBouncer on NullPool: one per request).",
    ["database"],
    buckets=LATENCY_BUCKETS,
)
DB_CONNECT_ERRORS = Counter(
    "storefront_db_connect_errors", "Database connections that could not be opened.", ["database"]
)
# The app's pool only (DB_POOL=queue): on NullPool a request's connection is a new one, which
# DB_CONNECT times.
DB_ACQUIRE = Histogram(
    "storefront_db_acquire_seconds",
    "Time to get a connection from the app's pool (DB_POOL=queue), its wait included.",
    ["database"],
    buckets=LATENCY_BUCKETS,
)
DB_ACQUIRE_ERRORS = Counter(
    "storefront_db_acquire_errors",
    "Requests for a pooled connection that failed: the pool's timeout, or a connection refused.",
    ["database"],
)
ORDERS_PLACED = Counter("storefront_orders_placed", "Orders placed (committed).")
ORDERS_CANCELLED = Counter("storefront_orders_cancelled", "Orders cancelled (committed).")
SIGN_UPS = Counter("storefront_sign_ups", "Users who signed up (committed).")
FAILED_LOGINS = Counter(
    "storefront_failed_logins",
    "Refused logins: bad_credentials (an unknown user, a wrong password, a deactivated "
    "account) or throttled (too many failures).",
    ["reason"],
)
BUILD_INFO = Gauge(
    "storefront_build_info",
    "The running release: its version and the commit it was built from.",
    ["version", "git_sha"],
    multiprocess_mode="max",
)


@cache
def _request_series(method: str, route: str, status_class: str) -> Histogram:
    """A request's series, looked up once per set of labels (`labels()` locks and checks its
    values on every call). The sets are bounded as the labels are."""
    return LATENCY.labels(method, route, status_class)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    method = method if method in METHODS else "other"
    _request_series(method, route, f"{status // 100}xx").observe(seconds)


class InFlight:
    """This worker's requests being answered: counted in memory, and published to the
    `http_requests_in_flight` gauge (the worker's file, in multiprocess mode) at once when the
    count falls below what was published, every second (`published_every`) when it has risen,
    and by the worker that answers a scrape, before it reads the files. A scrape thus counts
    its own worker exactly, an idle worker as 0, and another busy worker's new requests about
    a second late (later if that worker's event loop is blocked). Writing the gauge at each
    request's start and end would be two writes to the worker's file per request, nearly a
    third of the metrics' cost on the request path (docs/benchmarks.md); this way a steady
    load writes it a few times a second."""

    def __init__(self) -> None:
        self.now = 0
        self._published = 0

    def started(self) -> None:
        self.now += 1

    def finished(self) -> None:
        self.now -= 1
        if self.now < self._published:
            self.publish()

    def publish(self) -> None:
        if self.now != self._published:
            IN_FLIGHT.set(self.now)
            self._published = self.now

    @asynccontextmanager
    async def published_every(self, seconds: float) -> AsyncIterator[None]:
        """Publishes the count every `seconds` while the block runs."""

        async def keep_publishing() -> None:
            while True:
                await asyncio.sleep(seconds)
                try:
                    self.publish()
                except Exception:  # a full or lost metrics directory must not end it
                    logger.exception("publishing the requests in flight failed")

        task = asyncio.create_task(keep_publishing(), name="requests-in-flight-publisher")
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task


REQUESTS_IN_FLIGHT = InFlight()


def count_on_commit(session: AsyncSession, counter: Counter) -> None:
    """`counter` goes up when the session's transaction commits: a request that fails after
    this (its commit refused, an error answered) counts nothing, and neither does work in a
    savepoint rolled back (a keyed request's refused work, whose answer is still committed)."""
    sync = session.sync_session
    opened = sync.get_nested_transaction()  # the innermost savepoint, if any
    undone = False

    def rolled_back(_session: Session, previous: SessionTransaction) -> None:
        nonlocal undone
        transaction = opened
        while transaction is not None and not undone:
            undone = transaction is previous
            transaction = transaction.parent

    def committed(sync_session: Session) -> None:
        if not undone and not sync_session.in_nested_transaction():
            counter.inc()  # a savepoint's release is no commit

    if opened is not None:
        event.listen(sync, "after_soft_rollback", rolled_back)
    event.listen(sync, "after_commit", committed)


class _Timed:
    """A pool whose checkouts are timed, as one database's (timed_pool makes the classes, with
    that database's series)."""

    acquired: Histogram
    failed: Counter

    def connect(self) -> PoolProxiedConnection:
        started = perf_counter()
        try:
            connection: PoolProxiedConnection = super().connect()  # type: ignore[misc]
        except Exception:
            self.failed.inc()
            raise
        self.acquired.observe(perf_counter() - started)
        return connection


@cache
def timed_pool(base: type[Pool], database: str) -> type[Pool]:
    """`base`, the app's queue pool, with its checkouts timed, as `database`'s; its log lines
    under SQLAlchemy's name for `base`, so at SQLAlchemy's level."""
    namespace = {
        "acquired": DB_ACQUIRE.labels(database),
        "failed": DB_ACQUIRE_ERRORS.labels(database),
        "_sqla_logger_namespace": getattr(
            base, "_sqla_logger_namespace", f"{base.__module__}.{base.__name__}"
        ),
    }
    return type(f"Timed{base.__name__}", (_Timed, base), namespace)


def time_connects(engine: AsyncEngine, database: str) -> None:
    """Time each connection the engine opens, and count those that fail, as `database`'s:
    SQLAlchemy's `do_connect` event, which connects as the dialect would and hands the
    connection back."""
    seconds, errors = DB_CONNECT.labels(database), DB_CONNECT_ERRORS.labels(database)

    @event.listens_for(engine.sync_engine, "do_connect")
    def connect(dialect: Dialect, _record: ConnectionPoolEntry, cargs: Any, cparams: Any) -> Any:
        started = perf_counter()
        try:
            connection = dialect.connect(*cargs, **cparams)
        except Exception:
            errors.inc()
            raise
        seconds.observe(perf_counter() - started)
        return connection


def record_build(version: str, git_sha: str) -> None:
    BUILD_INFO.labels(version, git_sha).set(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def forget_process(pid: int | None = None) -> None:
    """A worker that stops takes its in-flight requests out of the live gauges' sums (the
    others' files stay: counters and histograms keep what a worker counted)."""
    if MULTIPROCESS_DIR:
        mark_process_dead(os.getpid() if pid is None else pid, MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]


async def scrape() -> bytes:
    """The exposition, with this worker's requests in flight published first, on the event
    loop that counts them; the files are read off the loop."""
    REQUESTS_IN_FLIGHT.publish()
    return await run_in_threadpool(exposition)


def exposition() -> bytes:
    """The metrics in Prometheus' text format: every worker's, summed, in multiprocess mode.
    A worker killed without stopping (uvicorn starts another) leaves live gauges behind; they
    are dropped here, as gunicorn's `child_exit` hook would."""
    if not MULTIPROCESS_DIR:
        return generate_latest(REGISTRY)
    for path in Path(MULTIPROCESS_DIR).glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        if not _alive(pid):
            with suppress(FileNotFoundError):  # another scrape, at once, removed it first
                forget_process(pid)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]
    return generate_latest(registry)
