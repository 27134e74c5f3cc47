"""Keyword-only factories that write rows straight to the database."""

import itertools

from sqlmodel.ext.asyncio.session import AsyncSession

from api.core.security import hash_password
from api.users.models import User

_serial = itertools.count(1)
DEFAULT_PASSWORD = "correct-horse-battery"


async def make_user(
    session: AsyncSession,
    *,
    username: str | None = None,
    email: str | None = None,
    password: str = DEFAULT_PASSWORD,
    full_name: str | None = None,
    is_active: bool = True,
    is_superuser: bool = False,
) -> User:
    n = next(_serial)
    user = User(
        username=username or f"user_{n}",
        email=email or f"user_{n}@example.com",
        full_name=full_name,
        hashed_password=await hash_password(password),
        is_active=is_active,
        is_superuser=is_superuser,
    )
    session.add(user)
    await session.flush()
    await session.refresh(user)
    return user
