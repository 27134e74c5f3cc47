"""A change whose COMMIT loses its connection is `outcome_unknown`: it may stand or not, and the
client is told to look it up, where `database_unavailable` means the change certainly was not
made. The connection is cut for real, by a TCP relay between the app and PostgreSQL, at the
COMMIT: once before PostgreSQL sees it, once after PostgreSQL has committed."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from sqlalchemy.engine import make_url

from api.core.db import build_engine, use_engine
from api.core.security import password_hash
from api.main import create_app
from tests.support.app import settings_for_tests
from tests.support.client import assert_problem, client_for, log_in
from tests.support.database import Database, query
from tests.support.factories import DEFAULT_PASSWORD

pytestmark = pytest.mark.concurrent


@dataclass
class Relay:
    """A TCP relay to PostgreSQL that, once armed, cuts the connection that sends a COMMIT:
    before passing it on (`after=False`) or once PostgreSQL has answered it (`after=True`)."""

    target: tuple[str, int]
    after: bool = False
    armed: bool = False
    cuts: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.target)
        cut = asyncio.Event()

        async def upstream() -> None:
            while data := await client_r.read(65536):
                if self.armed and b"COMMIT" in data:
                    self.armed = False
                    self.cuts += 1
                    if self.after:
                        server_w.write(data)
                        await server_w.drain()
                        await server_r.read(65536)  # PostgreSQL's answer, never passed on
                    cut.set()
                    return
                server_w.write(data)
                await server_w.drain()

        async def downstream() -> None:
            while not cut.is_set() and (data := await server_r.read(65536)):
                if cut.is_set():
                    return
                client_w.write(data)
                await client_w.drain()

        directions = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        with contextlib.suppress(ConnectionError):
            await asyncio.wait(directions, return_when=asyncio.FIRST_COMPLETED)
        for task in directions:
            task.cancel()
        for writer in (client_w, server_w):
            writer.close()

    def __call__(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self.handle(client_r, client_w))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


@contextlib.asynccontextmanager
async def relayed(database: Database, *, after: bool) -> AsyncIterator[tuple[Relay, str]]:
    """A relay to `database`'s server, and the database's URL through it."""
    url = make_url(database.url)
    relay = Relay(target=(url.host or "127.0.0.1", url.port or 5432), after=after)
    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield relay, url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    finally:
        server.close()
        for task in list(relay.tasks):
            task.cancel()
        await asyncio.gather(*relay.tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def cut_at_commit(
    database: Database, *, after: bool
) -> AsyncIterator[tuple[Relay, httpx.AsyncClient]]:
    """A superuser's client of the app, whose connections go through a relay that cuts the
    first COMMIT once armed; the superuser is logged in before."""
    await query(
        database.url,
        "INSERT INTO users (username, email, hashed_password, is_superuser)"
        " VALUES ('cutter', 'cutter@example.com', $1, true)",
        password_hash.hash(DEFAULT_PASSWORD),
    )
    async with relayed(database, after=after) as (relay, url):
        app = create_app(settings_for_tests(database_url=url, db_pool="null"))
        engine = build_engine(app.state.settings)
        use_engine(app, engine)
        try:
            async with client_for(app) as http:
                http.headers.update(await log_in(http, "cutter", DEFAULT_PASSWORD))
                yield relay, http
        finally:
            await engine.dispose()


@pytest.mark.parametrize(("after", "stands"), [(False, False), (True, True)])
async def test_a_change_whose_commit_loses_its_connection_is_outcome_unknown(
    committed: Database, after: bool, stands: bool
) -> None:
    async with cut_at_commit(committed, after=after) as (relay, http):
        relay.armed = True
        response = await http.post("/tags/", json={"name": "Cut"})
        again = await http.get("/tags/")

    assert relay.cuts == 1
    body = assert_problem(response, 503, "outcome_unknown")
    assert "with the same Idempotency-Key" in body["detail"]
    assert response.headers["retry-after"] == "1"
    assert again.status_code == 200  # the next request gets a connection of its own
    rows = await query(committed.url, "SELECT name FROM tags WHERE name = 'Cut'")
    assert len(rows) == (1 if stands else 0)


async def test_a_read_whose_commit_loses_its_connection_is_database_unavailable(
    committed: Database,
) -> None:
    async with cut_at_commit(committed, after=False) as (relay, http):
        relay.armed = True
        response = await http.get("/users/me")

    assert relay.cuts == 1
    assert_problem(response, 503, "database_unavailable")


@pytest.mark.parametrize(("after", "replayed"), [(False, False), (True, True)])
async def test_a_keyed_change_whose_commit_loses_its_connection_is_made_once_by_its_retry(
    committed: Database, after: bool, replayed: bool
) -> None:
    """What outcome_unknown's detail tells the client to do: the retry with the same key
    replays the change PostgreSQL committed (its answer was stored in the same transaction), or
    makes the one it did not; either way there is one."""
    key = {"Idempotency-Key": "cut-at-commit"}
    async with cut_at_commit(committed, after=after) as (relay, http):
        relay.armed = True
        response = await http.post("/tags/", json={"name": "Cut"}, headers=key)
        retry = await http.post("/tags/", json={"name": "Cut"}, headers=key)

    assert relay.cuts == 1
    assert_problem(response, 503, "outcome_unknown")
    assert retry.status_code == 201, retry.text
    assert (retry.headers.get("Idempotent-Replayed") == "true") is replayed
    rows = await query(committed.url, "SELECT id FROM tags WHERE name = 'Cut'")
    assert [row["id"] for row in rows] == [retry.json()["id"]]
    stored = await query(committed.url, "SELECT status FROM idempotency_keys")
    assert [row["status"] for row in stored] == [201]
