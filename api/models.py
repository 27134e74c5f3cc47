"""Every table model, imported in one place so that `SQLModel.metadata` is complete
(Alembic's env.py and the tests import this module)."""

from sqlmodel import SQLModel

from api.auth.models import LoginThrottle
from api.categories.models import Category
from api.core.idempotency import IdempotencyKey
from api.notifications.models import Notification
from api.orders.models import Order, OrderItem
from api.posts.models import Post, PostTagLink
from api.products.models import Product
from api.tags.models import Tag
from api.users.models import User

metadata = SQLModel.metadata

__all__ = [
    "Category",
    "IdempotencyKey",
    "LoginThrottle",
    "Notification",
    "Order",
    "OrderItem",
    "Post",
    "PostTagLink",
    "Product",
    "Tag",
    "User",
    "metadata",
]
