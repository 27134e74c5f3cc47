"""The Notification family: a message to a user, about one of their orders or not."""

from datetime import datetime

from sqlalchemy import Column, DateTime, Index, String
from sqlmodel import Field, SQLModel

from api.core.models import created_at_field

MESSAGE_MAX = 500


class Notification(SQLModel, table=True):
    __tablename__ = "notifications"
    # A user's notifications, newest first.
    __table_args__ = (Index("ix_notifications_user_id_id", "user_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE")
    message: str = Field(sa_type=String(MESSAGE_MAX))
    order_id: int | None = Field(
        default=None, foreign_key="orders.id", ondelete="SET NULL", index=True
    )
    read_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    created_at: datetime = created_at_field()


class NotificationRead(SQLModel):
    id: int
    user_id: int
    message: str
    order_id: int | None
    read_at: datetime | None
    created_at: datetime
