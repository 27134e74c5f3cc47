"""make bench's data and requests: the database (migrated, then `dataset.sql`'s deterministic
rows), the request shapes wrk sends (`Shape`, drawn as `wrk.lua` draws them), and how many SQL
statements each shape sends (pg_stat_statements).
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

import devstack
from api import launch
from bench.stack import API, BARE, TUTORIAL, Auth, BenchError, Server, run_quiet

HERE = Path(__file__).resolve().parent
DATASET = HERE / "dataset.sql"
DATABASE = "storefront_bench"
PRODUCTS, USERS, ORDERS, CATEGORIES = 100_000, 10_000, 50_000, 50
PAGE_SIZE = 20


# --- request shapes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """One kind of request: wrk sends it with random ids/bodies drawn the same way as here."""

    key: str
    label: str
    path: str
    method: str = "GET"
    ids: int = 0  # "{id}" in the path is a random id from 1 to ids
    lines: int = 0  # POST /orders/ bodies with this many distinct random products
    auth: Auth = ""
    status: int = 200
    app: str = API  # the uvicorn factory that serves it
    # A yardstick's: the API's request shape it answers like (make bench checks the answers
    # and, for the bare handlers, the statements sent before measuring).
    mirrors: str = ""

    def draw(self, rng: random.Random) -> tuple[str, dict[str, Any] | None]:
        """One request of this shape: its path and JSON body (as wrk.lua draws them)."""
        path = self.path.replace("{id}", str(rng.randint(1, self.ids))) if self.ids else self.path
        if not self.lines:
            return path, None
        products = rng.sample(range(1, PRODUCTS + 1), self.lines)
        return path, {"items": [{"product_id": p, "quantity": 1} for p in products]}


def shapes(deep_page: int, cursor: str) -> list[Shape]:
    deep = f"page {deep_page:,} of {PAGE_SIZE}"
    page1 = f"/products/?size={PAGE_SIZE}"
    by_cursor = f"/products/?cursor={cursor}&size={PAGE_SIZE}"
    return [
        Shape("health", "GET /health", "/health"),
        Shape("floor", "GET /health, bare FastAPI handler (no middleware)", "/health", app=BARE),
        Shape("product", "GET /products/{id}", "/products/{id}", ids=PRODUCTS),
        Shape(
            "bare",
            "GET /products/{id}, bare asyncpg handler",
            "/products/{id}",
            ids=PRODUCTS,
            app=BARE,
            mirrors="product",
        ),
        Shape(
            "tutorial",
            "GET /products/{id}, tutorial-style app",
            "/products/{id}",
            ids=PRODUCTS,
            app=TUTORIAL,
            mirrors="product",
        ),
        Shape("page1", f"GET /products/ page 1 of {PAGE_SIZE}", page1),
        Shape(
            "bare_page1",
            f"GET /products/ page 1 of {PAGE_SIZE}, bare asyncpg handler",
            page1,
            app=BARE,
            mirrors="page1",
        ),
        Shape(
            "tutorial_page1",
            f"GET /products/ page 1 of {PAGE_SIZE}, tutorial-style app (offset + count)",
            page1,
            app=TUTORIAL,
            mirrors="page1",
        ),
        Shape("offset", f"GET /products/ {deep}, offset", f"/products/?page={deep_page}&size=20"),
        Shape("cursor", f"GET /products/ {deep}, cursor", by_cursor),
        Shape(
            "bare_cursor",
            f"GET /products/ {deep}, cursor, bare asyncpg handler",
            by_cursor,
            app=BARE,
            mirrors="cursor",
        ),
        Shape(
            "order",
            "GET /orders/{id}/details",
            "/orders/{id}/details",
            ids=ORDERS,
            auth="superuser",
        ),
        Shape(
            "post1", "POST /orders/ 1 line", "/orders/", "POST", lines=1, auth="user", status=201
        ),
        Shape(
            "post10",
            "POST /orders/ 10 lines",
            "/orders/",
            "POST",
            lines=10,
            auth="user",
            status=201,
        ),
    ]


def shape_keys(*apps: str) -> frozenset[str]:
    """The keys of the request shapes that these apps serve."""
    return frozenset(shape.key for shape in shapes(2, "") if shape.app in apps)


# --- the database --------------------------------------------------------------------------


def psql_script_options(variables: dict[str, str]) -> list[str]:
    """psql's options for a script run in one transaction that stops at its first error, with
    psql variables."""
    args = ["-X", "-q", "-1", "-v", "ON_ERROR_STOP=1"]
    for name, value in variables.items():
        args += ["-v", f"{name}={value}"]
    return args


def psql_file(postgres: devstack.EmbeddedPostgres, script: Path, **variables: str) -> None:
    """Run an SQL file in one transaction on the benchmark database, with psql variables."""
    args = [str(postgres.bin_dir / "psql"), *psql_script_options(variables)]
    args += ["-h", "127.0.0.1", "-p", str(postgres.port), "-U", devstack.SUPERUSER]
    args += ["-d", DATABASE, "-f", str(script)]
    result = run_quiet(args, env={**os.environ, "PGPASSWORD": postgres.password})
    if result.returncode != 0:
        raise BenchError(f"{script.name} failed: {result.stderr.strip()}")


def app_env(
    postgres: devstack.EmbeddedPostgres, bouncer: devstack.PgBouncer, database_url: str
) -> dict[str, str]:
    """The API's environment on the bench's stack, as the image runs it: production, NullPool
    to `database_url` (through PgBouncer, with its statement cache setting), the migrations
    straight to PostgreSQL, JSON lines at INFO, glibc's MALLOC_ENV."""
    return {
        **os.environ,
        "ENVIRONMENT": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DATABASE_URL": database_url,
        "DB_POOL": "null",
        "MIGRATIONS_DATABASE_URL": postgres.url(DATABASE),
        "LOG_JSON": "true",
        "LOG_LEVEL": "INFO",
        **launch.MALLOC_ENV,  # as deploy/Dockerfile launches the API
        **bouncer.statement_cache_env(),
    }


def prepare_database(postgres: devstack.EmbeddedPostgres, env: dict[str, str]) -> float:
    """A fresh database, migrated and loaded; the seconds the load took."""
    postgres.drop_database(DATABASE)
    postgres.create_database(DATABASE)
    postgres.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", DATABASE)
    migrate = [sys.executable, "-m", "alembic", "upgrade", "head"]
    result = run_quiet(migrate, cwd=devstack.ROOT, env=env)
    if result.returncode != 0:
        raise BenchError(f"migrations failed:\n{result.stdout}\n{result.stderr}")
    started = time.perf_counter()
    psql_file(postgres, DATASET, **dataset_variables())
    postgres.psql("VACUUM ANALYZE", DATABASE)
    return time.perf_counter() - started


def dataset_variables() -> dict[str, str]:
    """dataset.sql's psql variables: one real hash of a random password, from the app's own
    hasher, shared by every generated user (nobody logs in as them)."""
    from api.core import security  # imported only when needed

    return {"hashed_password": security.password_hash.hash(secrets.token_urlsafe(16))}


def deep_cursor(url: str, deep_page: int) -> tuple[str, list[int]]:
    """The `next_cursor` of the page before `deep_page` (by offset), and the ids of `deep_page`
    by offset, which the cursor's page must repeat."""
    with httpx.Client(base_url=url, timeout=60) as client:
        before = client.get("/products/", params={"page": deep_page - 1, "size": PAGE_SIZE})
        deep = client.get("/products/", params={"page": deep_page, "size": PAGE_SIZE})
        if before.status_code != 200 or deep.status_code != 200:
            raise BenchError(f"deep pages answered {before.status_code}, {deep.status_code}")
        cursor = before.json()["next_cursor"]
        if not cursor:
            raise BenchError(f"page {deep_page - 1} has no next_cursor")
        by_cursor = client.get("/products/", params={"cursor": cursor, "size": PAGE_SIZE})
    ids = [item["id"] for item in deep.json()["items"]]
    if [item["id"] for item in by_cursor.json()["items"]] != ids:
        raise BenchError("the cursor's page is not the offset's page")
    return cursor, ids


# --- statements per request ----------------------------------------------------------------


def headers_for(shape: Shape, server: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.tokens[shape.auth]}"} if shape.auth else {}


def send_checked(url: str, shape: Shape, headers: dict[str, str], requests: int, seed: str) -> None:
    """Send `requests` requests of `shape` one after another; each must answer its exact status
    (redirects are not followed, so a 3xx fails too)."""
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
        for _ in range(requests):
            path, body = shape.draw(rng)
            answer = client.request(shape.method, path, json=body)
            if answer.status_code != shape.status:
                raise BenchError(
                    f"{shape.label}: {shape.method} {path} answered {answer.status_code}"
                    f" (expected {shape.status}): {answer.text[:500]}"
                )


@dataclass
class Counted:
    """What the database executed per request of one shape."""

    total: float
    kinds: dict[str, float]  # app, transaction (BEGIN/COMMIT/SAVEPOINT...), driver
    queries: list[dict[str, Any]]  # each statement: per request, kind, its text (shortened)
    app_statements: dict[str, float]  # the app's statements, whole, and their calls per request


def count_statements(
    postgres: devstack.EmbeddedPostgres, server: Server, shape: Shape, requests: int
) -> Counted:
    """Send `requests` requests of `shape` one after another, each of which must answer its
    status, and divide what pg_stat_statements counted in the benchmark database by them.

    pg_stat_statements counts every statement the server executed, whoever sent it: the app's
    queries, BEGIN/COMMIT/SAVEPOINT (track_utility is on) and the driver's own queries (type
    introspection reads pg_catalog), so driver set-up per connection shows here too. A statement
    prepared and then executed counts once (the Parse round trip is not a statement).
    """
    postgres.psql("SELECT pg_stat_statements_reset()", DATABASE)
    send_checked(server.url, shape, headers_for(shape, server), requests, f"count-{shape.key}")
    time.sleep(0.2)
    result = postgres.psql(
        "SELECT coalesce(json_agg(json_build_object('calls', calls, 'query', query)"
        " ORDER BY calls DESC, query), '[]') FROM pg_stat_statements WHERE dbid = "
        f"(SELECT oid FROM pg_database WHERE datname = '{DATABASE}')",
        DATABASE,
    )
    kinds = {"app": 0.0, "transaction": 0.0, "driver": 0.0}
    queries = []
    app_statements = {}
    for entry in json.loads(result.stdout):
        text = " ".join(entry["query"].split())
        query = text.upper()
        if "PG_STAT_STATEMENTS" in query:
            continue
        if re.match(r"(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|START TRANSACTION)\b", query):
            kind = "transaction"
        elif "PG_CATALOG." in query or "PG_TYPE" in query or query.startswith(("SHOW", "SET")):
            kind = "driver"
        else:
            kind = "app"
        per_request = entry["calls"] / requests
        kinds[kind] += per_request
        if kind == "app":
            app_statements[text] = round(per_request, 2)
        queries.append({"per_request": round(per_request, 2), "kind": kind, "query": text[:300]})
    return Counted(
        round(sum(kinds.values()), 2),
        {k: round(v, 2) for k, v in kinds.items()},
        queries,
        app_statements,
    )


def check_same_answers(api: Server, yardstick: Server, shape: Shape, mirrored: Shape) -> None:
    """A yardstick answers what the API answers for the same requests: the same JSON (of a
    tutorial's page, the same items: its envelope is the tutorials' own), so that both do the
    same work. Three requests drawn as wrk draws them."""
    rng = random.Random(f"same-{shape.key}")
    with httpx.Client(timeout=60) as client:
        for _ in range(3):
            path, _ = shape.draw(rng)
            answers = [
                client.get(f"{server.url}{path}", headers=headers_for(s, server))
                for server, s in ((api, mirrored), (yardstick, shape))
            ]
            if any(answer.status_code != shape.status for answer in answers):
                raise BenchError(
                    f"{shape.label}: GET {path} answered {[a.status_code for a in answers]}"
                )
            theirs, ours = (answer.json() for answer in answers)
            if shape.app == TUTORIAL and isinstance(theirs, dict) and "items" in theirs:
                theirs, ours = theirs["items"], ours["items"]
            if theirs != ours:
                raise BenchError(
                    f"{shape.label} answers GET {path} unlike the API:\n{ours}\nthe API:\n{theirs}"
                )
