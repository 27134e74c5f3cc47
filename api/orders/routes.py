"""Orders over HTTP: a user's own orders; a superuser's to move along and to count."""

from typing import Annotated

from fastapi import Path, Query, Response, status

from api.auth.dependencies import KEYED, CurrentUser, admin_only
from api.core import conditional
from api.core.conditional import IfMatch, IfNoneMatch
from api.core.db import SessionDep
from api.core.errors import responses
from api.core.idempotency import IdempotentRoute
from api.core.models import MAX_ID
from api.core.pagination import Page, PageParamsDep
from api.core.routing import api_router
from api.orders import service
from api.orders.models import (
    InactiveDeleted,
    Order,
    OrderCreate,
    OrderDetails,
    OrderRead,
    OrderStats,
    OrderStatus,
    OrderSummary,
    TopSpender,
)
from api.users.dependencies import UserId, get_user_for

router = api_router(prefix="/orders", tags=["orders"], route_class=IdempotentRoute)
# The users' routes that answer from their orders.
users_router = api_router(prefix="/users", tags=["users"])

OrderId = Annotated[int, Path(gt=0, le=MAX_ID, description="The order id.")]
CREATE_ERRORS = responses(401, 403, 404, 409)


@router.post(
    "/",
    status_code=status.HTTP_201_CREATED,
    response_model=OrderRead,
    dependencies=[KEYED],
    responses=CREATE_ERRORS,
)
async def create_order(order_in: OrderCreate, caller: CurrentUser, session: SessionDep) -> Order:
    """Place an order: all of it or nothing; stock is taken at once and never oversold (409 naming
    the product and what is left). Writes the owner a notification."""
    return await service.create_order(session=session, caller=caller, order_in=order_in)


@router.post(
    "/with-notifications",
    status_code=status.HTTP_201_CREATED,
    response_model=OrderRead,
    dependencies=[KEYED],
    responses=CREATE_ERRORS,
)
async def create_order_with_notifications(
    order_in: OrderCreate, caller: CurrentUser, session: SessionDep
) -> Order:
    """The seeds' name for placing an order: every order writes its notification (in a
    savepoint: if that fails, the order still stands)."""
    return await service.create_order(session=session, caller=caller, order_in=order_in)


@router.get("/", response_model=Page[OrderSummary], responses=responses(401))
async def list_orders(
    caller: CurrentUser, session: SessionDep, params: PageParamsDep
) -> Page[Order]:
    """The caller's orders, newest first (a superuser's: everyone's)."""
    return await service.list_orders(session=session, params=params, caller=caller)


@router.get("/stats/summary", dependencies=admin_only, responses=responses(401, 403))
async def stats_summary(session: SessionDep) -> OrderStats:
    """Order count, revenue of the orders not cancelled, and counts by status (superuser)."""
    return await service.stats(session=session)


@router.get("/user/{user_id}", response_model=Page[OrderSummary], responses=responses(401, 404))
async def list_user_orders(
    user_id: UserId, caller: CurrentUser, session: SessionDep, params: PageParamsDep
) -> Page[Order]:
    """One user's orders, newest first: one's own, or anyone's for a superuser."""
    await get_user_for(session=session, user_id=user_id, caller=caller)
    return await service.list_orders(session=session, params=params, caller=caller, user_id=user_id)


@router.get("/{order_id}", response_model=OrderRead, responses=conditional.read_responses(401, 404))
async def get_order(
    order_id: OrderId, caller: CurrentUser, session: SessionDep, if_none_match: IfNoneMatch
) -> Response:
    """An order with its items and their products; another user's is a 404 (ETag: it changes
    with the products' stock too)."""
    order = await service.get_order(session=session, order_id=order_id, caller=caller)
    return conditional.answer(OrderRead, order, if_none_match)


@router.get("/{order_id}/details", response_model=OrderDetails, responses=responses(401, 404))
async def get_order_details(order_id: OrderId, caller: CurrentUser, session: SessionDep) -> Order:
    """An order with its user and its items with their products, in two statements."""
    return await service.get_order(session=session, order_id=order_id, caller=caller, details=True)


@router.patch(
    "/{order_id}/status",
    response_model=OrderRead,
    responses=conditional.write_responses(401, 403, 404, 409),
)
async def change_status(
    order_id: OrderId,
    new_status: OrderStatus,
    caller: CurrentUser,
    session: SessionDep,
    if_match: IfMatch,
) -> Response:
    """pending -> confirmed | cancelled, confirmed -> shipped | cancelled, shipped -> delivered;
    other moves are a 409 naming both states. Owners may cancel; the rest is a superuser's.
    Cancelling puts the stock back. If-Match makes it conditional."""
    order = await service.change_status(
        session=session, order_id=order_id, caller=caller, new_status=new_status, if_match=if_match
    )
    return conditional.answer(OrderRead, order)


@users_router.delete("/bulk/inactive", dependencies=admin_only, responses=responses(401, 403, 409))
async def delete_inactive(session: SessionDep) -> InactiveDeleted:
    """Delete every inactive user without orders; those with orders are kept and counted
    (superuser)."""
    return await service.delete_inactive_users(session=session)


@users_router.get("/top-spenders", dependencies=admin_only, responses=responses(401, 403))
async def top_spenders(
    session: SessionDep, limit: Annotated[int, Query(ge=1, le=100)] = 10
) -> list[TopSpender]:
    """Users by the total of their orders not cancelled, highest first (superuser)."""
    return await service.top_spenders(session=session, limit=limit)
