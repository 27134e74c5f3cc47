"""Authentication: passwords checked in constant-ish time, tokens issued and read, failed logins
counted in PostgreSQL."""

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import NamedTuple

import jwt
from sqlalchemy import Insert, case, delete, func, or_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.auth.models import LoginThrottle, PasswordChange, Token
from api.core import metrics
from api.core.config import Settings
from api.core.db import get_by_key, release_connection
from api.core.errors import BadRequest, Conflict, TooManyRequests, Unauthorized
from api.core.security import hash_password, password_hash, verify_password
from api.users.models import User

ALGORITHM = "HS256"
BAD_CREDENTIALS = "Incorrect username or password."


@cache
def dummy_hash() -> str:
    """A real argon2id hash to verify against when the user is unknown: same cost, no oracle."""
    return password_hash.hash("not the password of anyone")


def password_stamp(*, hashed_password: str, settings: Settings) -> str:
    """What a token carries of the password it was issued under (`pwd`): an HMAC of the hash,
    keyed with SECRET_KEY, so that a new password ends every token issued before it (as
    Django's session auth hash does) without a column or a statement more. It reveals nothing
    of the hash without the key."""
    key = settings.secret_key.get_secret_value().encode()
    digest = hmac.new(key, b"password-stamp:" + hashed_password.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()[:16]).rstrip(b"=").decode()


def create_access_token(*, user: User, settings: Settings) -> Token:
    now = datetime.now(UTC)
    lifetime = timedelta(minutes=settings.access_token_expire_minutes)
    stamp = password_stamp(hashed_password=user.hashed_password, settings=settings)
    claims = {"sub": str(user.id), "iat": now, "exp": now + lifetime, "pwd": stamp}
    token = jwt.encode(claims, settings.secret_key.get_secret_value(), algorithm=ALGORITHM)
    return Token(access_token=token, expires_in=int(lifetime.total_seconds()))


class TokenClaims(NamedTuple):
    user_id: int
    password_stamp: str


def claims_of(*, token: str, settings: Settings) -> TokenClaims:
    """The user and the password stamp of a valid token; anything else (expired, tampered,
    other algorithm, `none`, a claim missing) is a 401."""
    try:
        claims = jwt.decode(
            token,
            settings.secret_key.get_secret_value(),
            algorithms=[ALGORITHM],
            options={"require": ["sub", "iat", "exp", "pwd"]},
        )
        return TokenClaims(user_id=int(claims["sub"]), password_stamp=str(claims["pwd"]))
    except (jwt.PyJWTError, ValueError) as exc:
        raise Unauthorized("The token is invalid or has expired.") from exc


async def get_active_user(
    *, session: AsyncSession, claims: TokenClaims, settings: Settings
) -> User:
    """The token's user, while active and while their password is the one it was issued under."""
    user = await get_by_key(session, User, claims.user_id)
    if user is None or not user.is_active:
        raise Unauthorized("The token's user does not exist or is deactivated.")
    stamp = password_stamp(hashed_password=user.hashed_password, settings=settings)
    if not hmac.compare_digest(stamp, claims.password_stamp):
        raise Unauthorized("The password changed after the token was issued: log in again.")
    return user


async def authenticate(
    *,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    identifier: str,
    password: str,
    settings: Settings,
) -> Token:
    """Check a username-or-email and password; throttle an account after repeated failures.

    The attempt is counted before the password is checked, in one statement that refuses it
    once the account is locked: of any number of guesses sent at once, at most
    `login_max_failures` are checked. The count and the user are read on a connection of the
    login's own, closed before the password hash is computed: no connection is held through
    the hashing, and a login never holds one connection while it waits for another (with as
    many failing logins in flight as PgBouncer has server connections, every one waited)."""
    key = identifier.strip().lower()[:255]
    async with sessionmaker() as own, own.begin():
        if (await own.exec(_admit(key=key, settings=settings))).first() is None:
            locked = select(LoginThrottle.locked_until).where(LoginThrottle.key == key)
            locked_until = (await own.exec(locked)).first()
            wait = (locked_until - datetime.now(UTC)).total_seconds() if locked_until else 0
            metrics.FAILED_LOGINS.labels("throttled").inc()
            raise TooManyRequests(
                "Too many failed logins; try again later.", retry_after=max(int(wait) + 1, 1)
            )
        by_name_or_email = or_(col(User.username) == identifier, func.lower(User.email) == key)
        user = (await own.exec(select(User).where(by_name_or_email))).first()
    valid = await verify_password(password, user.hashed_password if user else dummy_hash())
    if user is None or not valid or not user.is_active:
        metrics.FAILED_LOGINS.labels("bad_credentials").inc()
        raise Unauthorized(BAD_CREDENTIALS)
    await session.exec(delete(LoginThrottle).where(col(LoginThrottle.key) == key))
    return create_access_token(user=user, settings=settings)


def _admit(*, key: str, settings: Settings) -> Insert:
    """Count a login attempt on `key`, unless the key is locked: one atomic upsert answering the
    new count, or no row for a locked key. The attempt that reaches `login_max_failures` locks
    the key for `login_lockout_seconds` (a success deletes the row, lock and count). A window
    older than that, or an expired lock, starts the count over."""
    window = timedelta(seconds=settings.login_lockout_seconds)
    table = LoginThrottle.__table__  # type: ignore[attr-defined]
    expired = or_(
        table.c.window_started_at < func.now() - window, table.c.locked_until.is_not(None)
    )
    failures = case((expired, 1), else_=table.c.failures + 1)
    statement = insert(table).values(
        key=key,
        failures=1,
        window_started_at=func.now(),
        locked_until=func.now() + window if settings.login_max_failures <= 1 else None,
    )
    return statement.on_conflict_do_update(
        index_elements=[table.c.key],
        set_={
            "failures": failures,
            "window_started_at": case((expired, func.now()), else_=table.c.window_started_at),
            "locked_until": case(
                (failures >= settings.login_max_failures, func.now() + window), else_=None
            ),
        },
        # A locked key's row is left as it is, and the statement answers no row.
        where=or_(table.c.locked_until.is_(None), table.c.locked_until <= func.now()),
    ).returning(table.c.failures)


async def change_password(*, session: AsyncSession, user: User, change: PasswordChange) -> None:
    """The new hash is written only over the one the current password was checked against: of
    two changes made at once with the same current password, the second is a 409 instead of
    silently replacing the first."""
    checked = user.hashed_password
    await release_connection(session)  # the caller is read; no connection through the hashing
    if not await verify_password(change.current_password, checked):
        raise BadRequest("The current password is incorrect.")
    hashed = await hash_password(change.new_password)
    changed = await session.exec(
        update(User)
        .where(col(User.id) == user.id, col(User.hashed_password) == checked)
        .values(hashed_password=hashed)
        .returning(col(User.id))
    )
    if changed.first() is None:
        raise Conflict(
            "The password was changed by another request meanwhile; nothing was changed."
        )
