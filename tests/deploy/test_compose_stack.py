"""compose.yaml for real, opt-in: `STOREFRONT_COMPOSE_TEST=1` and a Docker engine (`make
compose-test`; CI runs it). Builds the image, `docker compose up --wait` on a project of its own
(its own volumes, a free host port), checks readiness through PgBouncer, creates a superuser with
the image's own command, walks seed 003's walkthrough, and tears everything down, volumes too.
The stack runs with `make compose-env`'s production settings and random secrets, and its API
logs in as the app's role, whose SCRAM secret (never a password) is PgBouncer's auth file.
On the same stack (one build for the module): an order storm through PgBouncer, and restarts of
PgBouncer and of PostgreSQL under load. The walkthrough goes first: its statistics count the one
order it places. Everything is checked through the HTTP API, never with the database's own
credentials.

Without the variable it is skipped, saying how to run it; with the variable and no engine it
fails: whoever asked for it should hear that it did not run."""

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import devstack
from api import dbroles
from devstack.backup import Compose
from tests.support.app import ROOT
from tests.support.client import assert_problem, log_in
from tests.support.postgres_server import docker_reachable
from tests.support.walkthrough import ADMIN, walk

OPT_IN = "STOREFRONT_COMPOSE_TEST"
AUTH_FILE = "/etc/pgbouncer/userlist.txt"
PROBLEM = "application/problem+json"

pytestmark = pytest.mark.compose


def compose_command(project: str) -> list[str]:
    return ["docker", "compose", "--project-directory", str(ROOT), "--project-name", project]


def run(command: list[str], env: Mapping[str, str], timeout: float = 900) -> str:
    result = subprocess.run(command, env=dict(env), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@dataclass(frozen=True)
class Stack:
    """The project, up and healthy: its API's base URL, and the compose command and environment
    that reach it (`restart`, `ps`, `exec`)."""

    url: str
    compose: tuple[str, ...]
    env: Mapping[str, str]

    def command(self, *args: str) -> list[str]:
        return [*self.compose, *args]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """The whole stack from compose.yaml, up and healthy, for every test of the module."""
    if os.environ.get(OPT_IN) != "1":
        pytest.skip(f"opt-in: {OPT_IN}=1 with a Docker engine (make compose-test)")
    if not docker_reachable():
        pytest.fail(f"{OPT_IN}=1, but no Docker engine answers", pytrace=False)
    project = f"storefront-test-{secrets.token_hex(3)}"
    port = devstack.free_port()
    # As `make compose-env` sets it up for anything but a laptop: production, random secrets.
    generated = dict(
        line.split("=", 1)
        for line in dbroles.compose_env().splitlines()
        if line and not line.startswith("#")
    )
    env = {**os.environ, **generated, "API_PORT": str(port)}
    compose = compose_command(project)
    try:
        run([*compose, "up", "--build", "--detach", "--wait", "--wait-timeout", "300"], env)
        run(
            [
                *compose,
                "exec",
                "--no-TTY",
                "--env",
                f"FIRST_SUPERUSER_PASSWORD={ADMIN['password']}",
                "api",
                "python",
                "-m",
                "api",
                "create-superuser",
                "--email",
                ADMIN["email"],
            ],
            env,
        )
        yield Stack(url=f"http://127.0.0.1:{port}", compose=tuple(compose), env=env)
    finally:
        logs = subprocess.run(
            [*compose, "logs", "--no-color", "--tail", "50"],
            env=env,
            capture_output=True,
            text=True,
        )
        print(logs.stdout[-20_000:])  # shown by pytest when the test failed
        run([*compose, "down", "--volumes", "--remove-orphans", "--timeout", "20"], env)


async def test_compose_up_serves_the_walkthrough(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        ready = await http.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["pool_mode"] == "null"
        await walk(http)


# What the load tests create: names of their own, so that each test stands alone on the stack.


def unique(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


async def create_product(http: httpx.AsyncClient, admin: dict[str, str], stock: int) -> int:
    slug = unique("load")
    product = {
        "name": f"Load {slug}",
        "slug": slug,
        "price": "2.50",
        "sku": slug.upper(),
        "stock_quantity": stock,
    }
    created = await http.post("/products/", json=product, headers=admin)
    assert created.status_code == 201, created.text
    product_id: int = created.json()["id"]
    return product_id


async def stock_of(http: httpx.AsyncClient, product_id: int) -> int:
    response = await http.get(f"/products/{product_id}")
    assert response.status_code == 200, response.text
    stock: int = response.json()["stock_quantity"]
    return stock


@dataclass(frozen=True)
class Customer:
    id: int
    headers: dict[str, str]


async def sign_up(http: httpx.AsyncClient, count: int) -> list[Customer]:
    customers = []
    for _ in range(count):
        username = unique("buyer")
        password = secrets.token_urlsafe(16)
        user = {"username": username, "email": f"{username}@example.com", "password": password}
        created = await http.post("/users/", json=user)
        assert created.status_code == 201, created.text
        customers.append(Customer(created.json()["id"], await log_in(http, username, password)))
    return customers


async def orders_of(http: httpx.AsyncClient, customer: Customer) -> int:
    """How many orders the customer has (their own list's exact total)."""
    listed = await http.get("/orders/", params={"size": 1}, headers=customer.headers)
    assert listed.status_code == 200, listed.text
    total: int = listed.json()["total"]
    return total


def one_of(product_id: int) -> dict[str, Any]:
    return {"items": [{"product_id": product_id, "quantity": 1}]}


def items_of(order: dict[str, Any]) -> list[tuple[Any, ...]]:
    """An order's items as stored: the product each embeds is as it is now, so left out."""
    return [
        (i["id"], i["product_id"], i["quantity"], i["unit_price"], i["total_price"])
        for i in order["items"]
    ]


STORM_STOCK = 10
STORM_ORDERS = 40
STORM_CUSTOMERS = 4


def test_the_api_logs_in_as_the_app_role_and_pgbouncer_holds_only_its_secret(
    stack: Stack,
) -> None:
    app_password = stack.env["STOREFRONT_APP_PASSWORD"]
    userlist = run([*stack.compose, "exec", "-T", "pgbouncer", "cat", AUTH_FILE], stack.env)
    assert userlist.startswith('"storefront_app" "SCRAM-SHA-256$16:')
    assert app_password not in userlist
    api_env = run([*stack.compose, "exec", "-T", "api", "env"], stack.env)
    for name in ("POSTGRES_PASSWORD", "STOREFRONT_OWNER_PASSWORD"):
        assert stack.env[name] not in api_env  # the API holds its own login only
    roles = run(
        [
            *stack.compose,
            "exec",
            "-T",
            "db",
            "psql",
            "-U",
            "postgres",
            "-d",
            "storefront",
            "-Atc",
            "SELECT usename FROM pg_stat_activity WHERE backend_type = 'client backend'"
            " AND usename <> 'postgres'",
        ],
        stack.env,
    )
    assert set(roles.split()) == {"storefront_app"}  # PgBouncer's server connections


ACCESS_BURST = 300


async def test_each_request_leaves_one_whole_json_access_line_in_the_containers_log(
    stack: Stack,
) -> None:
    """The API's two workers write their access lines into the container's output, a pipe, a
    tenth of a second's at a time: every request of a burst has exactly one line, and
    every line of the log, uvicorn's supervisor's too, is whole JSON (no worker's write split
    another's)."""
    ids = [f"compose-log-{secrets.token_hex(8)}" for _ in range(ACCESS_BURST)]
    limit = asyncio.Semaphore(25)

    async def ask(http: httpx.AsyncClient, request_id: str) -> None:
        async with limit:
            response = await http.get("/products/999999999", headers={"X-Request-ID": request_id})
        assert response.status_code == 404, response.text

    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        await asyncio.gather(*(ask(http, request_id) for request_id in ids))

    deadline = time.monotonic() + 30
    while True:
        output = run([*stack.compose, "logs", "--no-color", "--no-log-prefix", "api"], stack.env)
        # Compose starts each line with an erase-line escape. Every line is JSON, uvicorn's own
        # too (`python -m api serve` gives it the app's format), and a write split by another
        # would leave a line that is not.
        lines, broken = [], []
        for line in filter(None, output.replace("\x1b[2K", "").splitlines()):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                broken.append(line)
        assert broken == []
        found = Counter(
            line["request_id"]
            for line in lines
            if line.get("logger") == "api.access" and line.get("request_id") in ids
        )
        if len(found) == len(ids) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert found == Counter(ids)
    burst = [line for line in lines if line.get("request_id") in ids]
    assert {(line["route"], line["status"]) for line in burst} == {("/products/{product_id}", 404)}


async def test_an_order_storm_through_pgbouncer_sells_the_stock_once(stack: Stack) -> None:
    """Forty orders of one unit at once for ten in stock, through PgBouncer in transaction mode
    with asyncpg's statement cache on: ten placed, thirty refused with a 409 problem, nothing in
    between, and no prepared statement lost or duplicated on the way."""
    async with httpx.AsyncClient(base_url=stack.url, timeout=120) as http:
        admin = await log_in(http, ADMIN["email"], ADMIN["password"])
        product_id = await create_product(http, admin, STORM_STOCK)
        customers = await sign_up(http, STORM_CUSTOMERS)
        buyers = [customers[n % STORM_CUSTOMERS] for n in range(STORM_ORDERS)]
        storm = await asyncio.gather(
            *(http.post("/orders/", json=one_of(product_id), headers=b.headers) for b in buyers)
        )
        stock = await stock_of(http, product_id)
        placed = [await orders_of(http, customer) for customer in customers]

    leaks = [r.text for r in storm if "prepared statement" in r.text.lower()]
    assert not leaks, leaks
    statuses = Counter(r.status_code for r in storm)
    others = {r.text for r in storm if r.status_code not in (201, 409)}
    assert statuses == {201: STORM_STOCK, 409: STORM_ORDERS - STORM_STOCK}, (statuses, others)
    for refusal in (r for r in storm if r.status_code == 409):
        body = assert_problem(refusal, 409, "insufficient_stock")
        assert body["errors"] == [
            {"field": "items", "message": f"product {product_id}: available 0"}
        ]
    assert stock == 0
    accepted = [r.json() for r in storm if r.status_code == 201]
    assert len({order["id"] for order in accepted}) == STORM_STOCK
    assert all(items_of(order)[0][1:3] == (product_id, 1) for order in accepted)
    # Each placed order left the stock one lower than another did: 9 down to 0, never below.
    left = sorted(order["items"][0]["product"]["stock_quantity"] for order in accepted)
    assert left == list(range(STORM_STOCK))
    # Each customer has exactly the orders they were told were placed: no other ones.
    acknowledged = Counter(b.id for b, r in zip(buyers, storm, strict=True) if r.status_code == 201)
    assert placed == [acknowledged[customer.id] for customer in customers]


# Restarts under load: a few clients read the product and order one unit, again and again,
# while PgBouncer or PostgreSQL restarts; each answer is timed against the restart.

LOAD_CLIENTS = 4
LOAD_STOCK = 1_000_000
WARM_UP = 20  # successes before the restart: the load runs and everything succeeds
STREAK = 20  # full service: this many successes in a row
RECOVERY_BOUND = 30.0  # seconds from the restart command's return to full service
HEALTHY_BOUND = 120.0  # seconds for the restarted container to be healthy again
PAUSE = 0.02  # between a client's requests
PAUSE_AFTER_FAILURE = 0.1


@dataclass(frozen=True)
class Answer:
    """One request of the load: when it was sent and answered (time.monotonic()), and what came
    back; `status` None when no HTTP answer did (the transport's error is the text)."""

    request: str
    sent: float
    answered: float
    status: int | None
    content_type: str | None
    retry_after: str | None
    text: str

    @property
    def ok(self) -> bool:
        return self.status in (200, 201)

    @property
    def unavailable(self) -> bool:
        """A 503 problem that says when to retry: what an outage of the database may answer."""
        return self.status == 503 and self.content_type == PROBLEM and self.retry_after is not None


@dataclass(frozen=True)
class Placed:
    """An order acknowledged with a 201: whose, and its items as the answer gave them."""

    id: int
    owner: Customer
    items: list[tuple[Any, ...]]
    quantity: int


async def load_client(
    http: httpx.AsyncClient,
    product_id: int,
    customer: Customer,
    stop: asyncio.Event,
    answers: list[Answer],
    placed: list[Placed],
) -> None:
    """Alternately read the product and order one of it as `customer`, until `stop`."""
    for n in range(1_000_000):  # bounded; `stop` ends it long before
        if stop.is_set():
            return
        if n % 2:
            request = http.build_request(
                "POST", "/orders/", json=one_of(product_id), headers=customer.headers
            )
        else:
            request = http.build_request("GET", f"/products/{product_id}")
        label = f"{request.method} {request.url.path}"
        sent = time.monotonic()
        try:
            response = await http.send(request)
        except httpx.TransportError as exc:
            answers.append(Answer(label, sent, time.monotonic(), None, None, None, repr(exc)))
            await asyncio.sleep(PAUSE_AFTER_FAILURE)
            continue
        answer = Answer(
            label,
            sent,
            time.monotonic(),
            response.status_code,
            response.headers.get("content-type"),
            response.headers.get("retry-after"),
            response.text,
        )
        answers.append(answer)  # in the order of the answers: one event loop
        if response.status_code == 201:
            order = response.json()
            quantity = sum(item["quantity"] for item in order["items"])
            placed.append(Placed(order["id"], customer, items_of(order), quantity))
        await asyncio.sleep(PAUSE if answer.ok else PAUSE_AFTER_FAILURE)


def recovery(answers: list[Answer], since: float, streak: int) -> float | None:
    """When full service came back: the answer time of the first of `streak` successes in a row
    (in the order they were answered) among the requests sent from `since` on; None before."""
    run: list[Answer] = []
    for answer in (a for a in answers if a.sent >= since):
        run = [*run, answer] if answer.ok else []
        if len(run) == streak:
            return run[0].answered
    return None


async def until(
    condition: Callable[[], bool | Awaitable[bool]], within: float, interval: float = 0.1
) -> bool:
    """Whether `condition` became true within `within` seconds (checked every `interval`)."""
    deadline = time.monotonic() + within
    while True:
        outcome = condition()
        if outcome if isinstance(outcome, bool) else await outcome:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)


async def docker(*command: str, env: Mapping[str, str] | None = None) -> str:
    process = await asyncio.create_subprocess_exec(
        *command,
        env=dict(env) if env is not None else None,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=300)
    assert process.returncode == 0, f"{' '.join(command)}:\n{stdout.decode()}\n{stderr.decode()}"
    return stdout.decode().strip()


async def container_of(stack: Stack, service: str) -> str:
    container = await docker(*stack.command("ps", "--quiet", service), env=stack.env)
    assert container, f"no container for {service}"
    assert "\n" not in container, f"{service}: {container!r}"
    return container


async def state_of(container: str, field: str) -> str:
    """A field of the container's state, such as StartedAt or Health.Status."""
    return await docker("docker", "inspect", "--format", f"{{{{.State.{field}}}}}", container)


@dataclass(frozen=True)
class Restart:
    service: str
    issued: float
    returned: float
    recovered: float | None
    answers: list[Answer]

    def report(self) -> str:
        outages = [a for a in self.answers if a.unavailable]
        window = (
            f" (sent from {min(a.sent for a in outages) - self.issued:+.2f} s, answered until"
            f" {max(a.answered for a in outages) - self.issued:+.2f} s from the issue, the"
            f" slowest in {max(a.answered - a.sent for a in outages):.2f} s;"
            f" codes {dict(Counter(json.loads(a.text).get('code') for a in outages))})"
            if outages
            else ""
        )
        back = (
            f"{self.recovered - self.issued:.2f} s after the command was issued, "
            f"{self.recovered - self.returned:.2f} s after it returned"
            if self.recovered is not None
            else "never"
        )
        return (
            f"restart {self.service}: the command took {self.returned - self.issued:.2f} s; "
            f"full service ({STREAK} successes in a row) back {back}; "
            f"{len(outages)} of {len(self.answers)} answers were 503{window}"
        )


async def restart_under_load(
    stack: Stack,
    http: httpx.AsyncClient,
    service: str,
    product_id: int,
    customers: list[Customer],
    placed: list[Placed],
) -> Restart:
    """`docker compose restart --no-deps <service>` while the load runs, timed; the load goes on
    until full service is back and the container is healthy again (a 503 then is a relapse).
    --no-deps: compose's restart would otherwise restart the services that depend on this one
    too, the API among them."""
    container = await container_of(stack, service)
    started = await state_of(container, "StartedAt")
    answers: list[Answer] = []
    stop = asyncio.Event()
    clients = [
        asyncio.create_task(load_client(http, product_id, c, stop, answers, placed))
        for c in customers
    ]
    try:
        warm = await until(lambda: sum(a.ok for a in answers) >= WARM_UP, within=120)
        assert warm, f"no load before the restart: {answers[-5:]}"
        issued = time.monotonic()
        await docker(*stack.command("restart", "--no-deps", service), env=stack.env)
        returned = time.monotonic()
        await until(
            lambda: recovery(answers, returned, STREAK) is not None,
            within=RECOVERY_BOUND + 30,  # long enough to see how late it came
        )

        async def healthy() -> bool:
            return await state_of(container, "Health.Status") == "healthy"

        assert await until(healthy, within=HEALTHY_BOUND, interval=0.5), (
            f"{service} not healthy {HEALTHY_BOUND:.0f} s after its restart"
        )
        assert await state_of(container, "StartedAt") != started, f"{service} did not restart"
    finally:
        stop.set()
        await asyncio.gather(*clients)
    return Restart(service, issued, returned, recovery(answers, returned, STREAK), answers)


@pytest.mark.parametrize("service", ["pgbouncer", "db"])
async def test_a_restart_under_load_costs_503s_only_until_it_is_back(
    stack: Stack, service: str
) -> None:
    """While a few clients read and order, PgBouncer (or PostgreSQL) restarts. Every answer is a
    success or a 503 problem with Retry-After, 503s only between the restart's issue and full
    service's return, which comes within RECOVERY_BOUND of the restart's end; no order told 201
    is lost, and the stock went down by exactly the orders placed."""
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as http:
        admin = await log_in(http, ADMIN["email"], ADMIN["password"])
        product_id = await create_product(http, admin, LOAD_STOCK)
        customers = await sign_up(http, LOAD_CLIENTS)
        placed: list[Placed] = []
        restart = await restart_under_load(stack, http, service, product_id, customers, placed)
        print(restart.report())

        # After it: each acknowledged order as its owner placed it, and the stock to match.
        limit = asyncio.Semaphore(8)

        async def fetch(order: Placed) -> httpx.Response:
            async with limit:
                return await http.get(f"/orders/{order.id}", headers=order.owner.headers)

        fetched = await asyncio.gather(*(fetch(order) for order in placed))
        stock = await stock_of(http, product_id)
        totals = [await orders_of(http, customer) for customer in customers]

    answers = restart.answers
    failures = [a for a in answers if not (a.ok or a.unavailable)]
    assert not failures, failures[:10]
    leaks = [a for a in answers if "prepared statement" in a.text.lower()]
    assert not leaks, leaks[:10]
    during = [a for a in answers if a.sent <= restart.returned and a.answered >= restart.issued]
    assert during, f"no request in flight during the restart: {restart.report()}"
    assert restart.recovered is not None, restart.report()
    early = [a for a in answers if a.unavailable and a.answered < restart.issued]
    late = [a for a in answers if a.unavailable and a.sent >= restart.recovered]
    assert not early, (restart.report(), early[:5])
    assert not late, (restart.report(), late[:5])
    assert restart.recovered - restart.returned <= RECOVERY_BOUND, restart.report()

    lost = [
        (o.id, r.status_code) for o, r in zip(placed, fetched, strict=True) if r.status_code != 200
    ]
    assert not lost, lost[:10]
    changed = [o.id for o, r in zip(placed, fetched, strict=True) if items_of(r.json()) != o.items]
    assert not changed, changed[:10]
    assert stock == LOAD_STOCK - sum(order.quantity for order in placed)
    acknowledged = Counter(order.owner.id for order in placed)
    assert totals == [acknowledged[customer.id] for customer in customers]


def cut_short(dump: Path, copy: Path) -> Path:
    """The dump's first 2,000 bytes: what a copy interrupted on its way looks like."""
    copy.write_bytes(dump.read_bytes()[:2000])
    return copy


def stack_contents(target: Compose) -> dict[str, str]:
    """Every table's rows in a stable order, and every sequence's position."""
    found = {}
    tables = target.psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    for table in tables.split():
        found[table] = target.psql(f"SELECT * FROM {table} AS t ORDER BY t::text")
    sequences = target.psql("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'")
    for sequence in sequences.split():
        found[sequence] = target.psql(f"SELECT last_value, is_called FROM {sequence}")
    return found


async def test_a_backup_restores_into_the_stack_row_for_row(stack: Stack, tmp_path: Path) -> None:
    """A post with a tag beside what the other tests made (users, products, orders with their
    items), `make backup` through the db service, then `make restore FORCE=1` into the same stack
    (the API stopped, the database made again, restored, migrated, the API started): every row
    and sequence as it was, and the next order gets the next id. Runs last: it replaces the
    database the other tests filled."""
    project = stack.compose[stack.compose.index("--project-name") + 1]
    target = Compose(project)
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        admin = await log_in(http, ADMIN["email"], ADMIN["password"])
        tag = await http.post("/tags/", json={"name": unique("kept")}, headers=admin)
        assert tag.status_code == 201, tag.text
        post = await http.post(
            "/posts/", json={"title": unique("Kept "), "content": "x"}, headers=admin
        )
        assert post.status_code == 201, post.text
        tagged = await http.put(
            f"/posts/{post.json()['id']}/tags/{tag.json()['id']}", headers=admin
        )
        assert tagged.status_code == 200, tagged.text

    def devstack_command(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "devstack", *args, "--target", "compose"]
        return subprocess.run(
            [*command, "--project", project],
            cwd=ROOT,
            env=dict(stack.env),
            capture_output=True,
            text=True,
            timeout=600,
        )

    made = devstack_command("backup", "--out", str(tmp_path))
    assert made.returncode == 0, made.stderr
    dump = made.stdout.split()[1]  # "wrote <file> (compose)"
    assert Path(dump).parent == tmp_path
    before = stack_contents(target)
    assert int(before["orders_id_seq"].split("|")[0]) > 0
    assert before["order_items"]
    assert before["post_tags"]

    refused = devstack_command("restore", dump)
    assert refused.returncode == 1
    assert "FORCE=1" in refused.stderr
    truncated = await asyncio.to_thread(cut_short, Path(dump), tmp_path / "truncated.dump")
    broken = devstack_command("restore", str(truncated), "--force")
    assert broken.returncode == 1
    assert "not a whole dump" in broken.stderr
    assert stack_contents(target) == before  # nothing was dropped
    restored = devstack_command("restore", dump, "--force", "--out", str(tmp_path / "before"))
    assert restored.returncode == 0, restored.stderr
    [before_restore] = (tmp_path / "before").iterdir()  # the replaced database, dumped first
    assert before_restore.stat().st_size > 0
    assert stack_contents(target) == before

    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        admin = await log_in(http, ADMIN["email"], ADMIN["password"])
        product_id = await create_product(http, admin, 5)
        order = await http.post("/orders/", json=one_of(product_id), headers=admin)
        assert order.status_code == 201, order.text
        assert order.json()["id"] == int(before["orders_id_seq"].split("|")[0]) + 1
