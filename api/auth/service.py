"""Authentication: passwords checked in constant-ish time, tokens issued and read, failed logins
counted in PostgreSQL."""

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import NamedTuple

import jwt
from sqlalchemy import Insert, case, func, or_, update
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


# An address an account logged in from stays one it is let through from for this long.
KNOWN_FOR = timedelta(days=30)


async def authenticate(
    *,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    identifier: str,
    password: str,
    address: str,
    settings: Settings,
) -> Token:
    """Check a username-or-email and password, from a client `address`; throttle failures.

    Failures are counted twice, so that a guesser cannot lock the owner out:
    - per account and address: `login_max_failures` within `login_lockout_seconds` refuse that
      address (429) for `login_lockout_seconds`; the owner, elsewhere, is not affected;
    - per account over every address, against guessing spread over many addresses:
      `login_account_max_failures` in the window make the addresses the account has not
      logged in from (within KNOWN_FOR) wait `login_account_delay_seconds` (429 with that
      `Retry-After` at most); an address it has logged in from is let through.

    An attempt is counted before the password is checked, in one statement per count that
    refuses it once locked: of any number of guesses sent at once, at most the limit are
    checked. The counts and the user are read on a connection of the login's own, closed before
    the password hash is computed: no connection is held through the hashing, and a login
    never holds one connection while it waits for another."""
    account = identifier.strip().lower()[:255]
    # At most 8 + 45 (an IPv6 address's text) + 1 + 255 characters: the column holds 320.
    here, everywhere = f"address:{address[:45]} {account}", f"account:{account}"
    lockout = timedelta(seconds=settings.login_lockout_seconds)
    delay = timedelta(seconds=settings.login_account_delay_seconds)
    async with sessionmaker() as own, own.begin():
        if not await _admitted(own, here, settings.login_max_failures, lockout, lockout):
            raise await _throttled(own, here)
        admitted = await _admitted(
            own, everywhere, settings.login_account_max_failures, lockout, delay
        )
        if not admitted and not await _known(own, here):
            raise await _throttled(own, everywhere)
        by_name_or_email = or_(col(User.username) == identifier, func.lower(User.email) == account)
        user = (await own.exec(select(User).where(by_name_or_email))).first()
    valid = await verify_password(password, user.hashed_password if user else dummy_hash())
    if user is None or not valid or not user.is_active:
        metrics.FAILED_LOGINS.labels("bad_credentials").inc()
        raise Unauthorized(BAD_CREDENTIALS)
    # The attempt counted against the account was no guess: taken back, in the same statement.
    await session.exec(_remember(here, uncount=everywhere if admitted else None))
    return create_access_token(user=user, settings=settings)


async def _admitted(
    session: AsyncSession, key: str, limit: int, window: timedelta, lock: timedelta
) -> bool:
    """Count a login attempt on `key`, unless the key is locked: one atomic upsert, which
    answers no row for a locked key. The attempt that reaches `limit` within `window` locks the
    key for `lock`. A window older than that, or an expired lock, starts the count over."""
    table = LoginThrottle.__table__  # type: ignore[attr-defined]
    expired = or_(
        table.c.window_started_at < func.now() - window, table.c.locked_until.is_not(None)
    )
    failures = case((expired, 1), else_=table.c.failures + 1)
    statement = insert(table).values(
        key=key,
        failures=1,
        window_started_at=func.now(),
        locked_until=func.now() + lock if limit <= 1 else None,
    )
    admit = statement.on_conflict_do_update(
        index_elements=[table.c.key],
        set_={
            "failures": failures,
            "window_started_at": case((expired, func.now()), else_=table.c.window_started_at),
            "locked_until": case((failures >= limit, func.now() + lock), else_=None),
        },
        # A locked key's row is left as it is, and the statement answers no row.
        where=or_(table.c.locked_until.is_(None), table.c.locked_until <= func.now()),
    ).returning(table.c.failures)
    return (await session.exec(admit)).first() is not None


async def _known(session: AsyncSession, key: str) -> bool:
    """Whether the account logged in from this address within KNOWN_FOR."""
    known = select(LoginThrottle.known_until).where(
        LoginThrottle.key == key, col(LoginThrottle.known_until) > func.now()
    )
    return (await session.exec(known)).first() is not None


async def _throttled(session: AsyncSession, key: str) -> TooManyRequests:
    """The 429 for a locked key, its Retry-After what is left of the lock."""
    locked = select(LoginThrottle.locked_until).where(LoginThrottle.key == key)
    locked_until = (await session.exec(locked)).first()
    wait = (locked_until - datetime.now(UTC)).total_seconds() if locked_until else 0
    metrics.FAILED_LOGINS.labels("throttled").inc()
    return TooManyRequests(
        "Too many failed logins; try again later.", retry_after=max(int(wait) + 1, 1)
    )


def _remember(key: str, *, uncount: str | None) -> Insert:
    """A login succeeded from this address: its count starts over and it is known; and the
    attempt counted on `uncount` (the account's key) is taken back."""
    table = LoginThrottle.__table__  # type: ignore[attr-defined]
    fresh = {
        "failures": 0,
        "window_started_at": func.now(),
        "locked_until": None,
        "known_until": func.now() + KNOWN_FOR,
    }
    statement = insert(table).values(key=key, **fresh)
    remember = statement.on_conflict_do_update(index_elements=[table.c.key], set_=fresh)
    if uncount is None:
        return remember
    taken_back = (
        update(table)
        .where(table.c.key == uncount, table.c.failures > 0)
        .values(failures=table.c.failures - 1)
        .cte("taken_back")
    )
    return remember.add_cte(taken_back)


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
