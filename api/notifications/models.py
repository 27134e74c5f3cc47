"""The Notification family: a message to a user, about one of their orders or not."""

from datetime import datetime

from sqlalchemy import Column, DateTime, Index, String
from sqlmodel import Field, SQLModel

from api.core.models import EVERY_FIELD_ANSWERED, created_at_field

MESSAGE_MAX = 500


class NotificationBase(SQLModel):
    """The columns, shared by the table and the answer. The server writes every one of them:
    there is no create body."""

    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE")
    # Cut to MESSAGE_MAX by the server, never refused.
    message: str = Field(sa_type=String(MESSAGE_MAX))
    order_id: int | None = Field(
        default=None, foreign_key="orders.id", ondelete="SET NULL", index=True
    )
    read_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    created_at: datetime = created_at_field()


class Notification(NotificationBase, table=True):
    __tablename__ = "notifications"
    # A user's notifications, newest first.
    __table_args__ = (Index("ix_notifications_user_id_id", "user_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)


class NotificationRead(NotificationBase):
    model_config = EVERY_FIELD_ANSWERED

    id: int
