"""Notifications over HTTP: each user's own, newest first; marking one read keeps the first time."""

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel.ext.asyncio.session import AsyncSession

from api.notifications.models import Notification
from api.users.models import User
from tests.support.client import assert_problem, client_for
from tests.support.factories import make_notification, make_user


@pytest.fixture
async def reader(session: AsyncSession) -> User:
    return await make_user(session, username="reader")


@pytest.fixture
async def reader_client(app: FastAPI, reader: User) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app, reader) as client:
        yield client


async def test_lists_ones_own_newest_first(
    reader_client: httpx.AsyncClient, session: AsyncSession, reader: User
) -> None:
    notes = [await make_notification(session, user=reader, message=f"n{i}") for i in range(3)]
    await make_notification(session, user=await make_user(session), message="not yours")

    response = await reader_client.get(f"/users/{reader.id}/notifications", params={"size": 2})

    assert response.status_code == 200
    body = response.json()
    assert [n["message"] for n in body["items"]] == ["n2", "n1"]
    assert (body["total"], body["pages"]) == (3, 2)
    assert body["items"][0]["id"] == notes[-1].id
    assert body["items"][0]["read_at"] is None


async def test_another_users_list_is_a_404_but_a_superusers_to_read(
    reader_client: httpx.AsyncClient,
    admin_client: httpx.AsyncClient,
    session: AsyncSession,
) -> None:
    other = await make_user(session)
    await make_notification(session, user=other)

    assert_problem(await reader_client.get(f"/users/{other.id}/notifications"), 404, "not_found")
    as_admin = await admin_client.get(f"/users/{other.id}/notifications")
    assert as_admin.json()["total"] == 1
    missing = await admin_client.get("/users/999999/notifications")
    assert_problem(missing, 404, "not_found")


async def test_marking_read_is_idempotent(
    reader_client: httpx.AsyncClient, session: AsyncSession, reader: User
) -> None:
    note = await make_notification(session, user=reader)

    first = await reader_client.post(f"/notifications/{note.id}/read")
    second = await reader_client.post(f"/notifications/{note.id}/read")

    assert first.status_code == 200
    assert first.json()["read_at"] is not None
    assert second.json()["read_at"] == first.json()["read_at"]
    await session.refresh(note)
    assert note.read_at is not None


async def test_another_users_notification_is_a_404_and_stays_unread(
    reader_client: httpx.AsyncClient, session: AsyncSession
) -> None:
    note = await make_notification(session, user=await make_user(session))

    response = await reader_client.post(f"/notifications/{note.id}/read")

    assert_problem(response, 404, "not_found")
    fresh = await session.get(Notification, note.id, populate_existing=True)
    assert fresh is not None
    assert fresh.read_at is None


@pytest.mark.parametrize("path", ["/notifications/0/read", "/notifications/x/read"])
async def test_bad_ids_are_422(reader_client: httpx.AsyncClient, path: str) -> None:
    assert_problem(await reader_client.post(path), 422, "validation_error")


async def test_need_a_token(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/users/1/notifications"), 401, "unauthorized")
    assert_problem(await client.post("/notifications/1/read"), 401, "unauthorized")
