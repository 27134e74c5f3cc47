"""Login: the token answer and the failed-login counter (kept in PostgreSQL so that it holds
across every API process)."""

from datetime import datetime

from sqlalchemy import Column, DateTime
from sqlmodel import Field, SQLModel

from api.core.models import EVERY_FIELD_ANSWERED, created_at_field


class Token(SQLModel):
    model_config = EVERY_FIELD_ANSWERED

    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the token expires.")


class PasswordChange(SQLModel):
    current_password: str = Field(max_length=128)
    new_password: str = Field(min_length=8, max_length=128)


class LoginThrottle(SQLModel, table=True):
    """Failed logins, counted twice for an account (the lower-cased username or email that was
    tried): per client address, `address:<address> <account>`, and over every address,
    `account:<account>` (api/auth/service.py says what each limit does)."""

    __tablename__ = "login_throttles"

    key: str = Field(primary_key=True, max_length=320)
    failures: int = Field(default=0)
    window_started_at: datetime = created_at_field()
    locked_until: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    # On an address's row: until when that address counts as one the account logged in from.
    known_until: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
