"""The Order family: an order of a user, its items (one per product, at the price of the moment)
and the status machine. Totals, prices and order numbers are the server's: no request body sets
them."""

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

from sqlalchemy import CheckConstraint, Index, Numeric, String, UniqueConstraint
from sqlmodel import Field, Relationship, SQLModel

from api.core.models import (
    EVERY_FIELD_ANSWERED,
    RowId,
    created_at_field,
    money,
    text_field,
    updated_at_field,
)
from api.products.models import ProductRead
from api.users.models import UserRead

if TYPE_CHECKING:
    from api.products.models import Product
    from api.users.models import User

MAX_LINES = 100
MAX_QUANTITY = 1000
# 100 lines of at most 1,000 units at most 99,999,999.99 each stays below 10^14.
MONEY_TOTAL = Numeric(16, 2)

ShippingAddress = Annotated[str, text_field(500, min_length=1)]


class OrderStatus(StrEnum):
    pending = "pending"
    confirmed = "confirmed"
    shipped = "shipped"
    delivered = "delivered"
    cancelled = "cancelled"


# The only moves an order's status can make; delivered and cancelled are final.
TRANSITIONS = {
    OrderStatus.pending: {OrderStatus.confirmed, OrderStatus.cancelled},
    OrderStatus.confirmed: {OrderStatus.shipped, OrderStatus.cancelled},
    OrderStatus.shipped: {OrderStatus.delivered},
}


class OrderBase(SQLModel):
    """What a client writes on an order and reads back (the items are OrderItemBase's)."""

    shipping_address: ShippingAddress | None = None


class Order(OrderBase, table=True):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'confirmed', 'shipped', 'delivered', 'cancelled')",
            name="status_known",
        ),
        CheckConstraint("total_amount >= 0", name="total_not_negative"),
        # A user's orders, newest first.
        Index("ix_orders_user_id_id", "user_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    order_number: str = Field(sa_type=String(32), unique=True)
    status: OrderStatus = Field(default=OrderStatus.pending, sa_type=String(20), index=True)
    total_amount: Decimal = Field(default=Decimal("0.00"), sa_type=MONEY_TOTAL)
    # RESTRICT: orders are history; a user with orders is soft-deleted, never removed.
    user_id: int = Field(foreign_key="users.id", ondelete="RESTRICT")
    created_at: datetime = created_at_field()
    updated_at: datetime = updated_at_field()

    # Never loaded implicitly: every query says what it loads.
    items: list["OrderItem"] = Relationship(
        sa_relationship_kwargs={"lazy": "raise", "order_by": "OrderItem.product_id"}
    )
    user: "User" = Relationship(sa_relationship_kwargs={"lazy": "raise"})


class OrderItemBase(SQLModel):
    """A product and its quantity. A stored item merges an order's lines of one product, so
    its quantity may pass one line's limit (OrderLine's)."""

    # RESTRICT: a product on an order is deactivated, never deleted.
    product_id: int = Field(foreign_key="products.id", ondelete="RESTRICT", index=True)
    quantity: int


class OrderItem(OrderItemBase, table=True):
    __tablename__ = "order_items"
    __table_args__ = (
        # Lines of one product are merged, so a product appears once per order.
        UniqueConstraint("order_id", "product_id"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
    )

    id: int | None = Field(default=None, primary_key=True)
    order_id: int = Field(foreign_key="orders.id", ondelete="CASCADE")
    unit_price: Decimal = Field(sa_type=Numeric(10, 2))
    total_price: Decimal = Field(sa_type=MONEY_TOTAL)

    product: "Product" = Relationship(sa_relationship_kwargs={"lazy": "raise"})


class OrderLine(OrderItemBase):
    product_id: RowId
    quantity: int = Field(gt=0, le=MAX_QUANTITY)


class OrderCreate(OrderBase):
    """Prices, totals, status and the order number are the server's; anything else sent is
    ignored. `user_id` defaults to the caller; only a superuser may name another user."""

    user_id: RowId | None = None
    items: list[OrderLine] = Field(min_length=1, max_length=MAX_LINES)


class OrderItemRead(OrderItemBase):
    id: int
    unit_price: Annotated[Decimal, money(10)]
    total_price: Annotated[Decimal, money(16)]
    product: ProductRead


class OrderSummary(OrderBase):
    """An order without its items, for lists."""

    model_config = EVERY_FIELD_ANSWERED

    id: int
    order_number: str
    status: OrderStatus
    total_amount: Annotated[Decimal, money(16)]
    user_id: int
    created_at: datetime
    updated_at: datetime


class OrderRead(OrderSummary):
    items: list[OrderItemRead]


class OrderDetails(OrderRead):
    user: UserRead


class OrderStats(SQLModel):
    total_orders: int
    total_revenue: Annotated[Decimal, money(16)] = Field(
        description="Sum of the totals of orders not cancelled."
    )
    orders_by_status: dict[OrderStatus, int]


class InactiveDeleted(SQLModel):
    deleted: int
    kept_with_orders: int = Field(description="Inactive users kept because they have orders.")


class TopSpender(SQLModel):
    user_id: int
    username: str
    email: str
    order_count: int
    total_spent: Annotated[Decimal, money(16)] = Field(
        description="Sum of the totals of their orders not cancelled."
    )


UNIQUE_ORDER_NUMBER = "uq_orders_order_number"
REFERENCES = {"fk_orders_user_id_users": "user_id"}
