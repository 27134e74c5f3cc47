"""Keyword-only factories that write rows straight to the database."""

import itertools
from decimal import Decimal

from sqlmodel.ext.asyncio.session import AsyncSession

from api.categories.models import Category
from api.core.security import hash_password
from api.notifications.models import Notification
from api.orders.models import Order, OrderItem, OrderStatus
from api.posts.models import Post, PostStatus
from api.products.models import Product
from api.tags.models import Tag
from api.users.models import User
from tests.support.database import scalar

_serial = itertools.count(1)
DEFAULT_PASSWORD = "correct-horse-battery"


_hashes: dict[str, str] = {}


async def hashed(password: str) -> str:
    """A real argon2id hash of `password`, computed once per password for the whole run: each
    costs about 35 ms, and the suite makes hundreds of users."""
    if password not in _hashes:
        _hashes[password] = await hash_password(password)
    return _hashes[password]


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
        hashed_password=await hashed(password),
        is_active=is_active,
        is_superuser=is_superuser,
    )
    session.add(user)
    await session.flush()
    await session.refresh(user)
    return user


async def make_category(
    session: AsyncSession, *, name: str, parent: Category | None = None
) -> Category:
    category = Category(name=name, slug=name.lower(), parent_id=parent.id if parent else None)
    session.add(category)
    await session.flush()
    return category


async def make_tag(session: AsyncSession, *, name: str, slug: str | None = None) -> Tag:
    tag = Tag(name=name, slug=slug or name.lower())
    session.add(tag)
    await session.flush()
    return tag


async def make_product(
    session: AsyncSession,
    *,
    name: str,
    price: str = "9.99",
    stock: int = 5,
    category: Category | None = None,
    is_active: bool = True,
    description: str | None = None,
) -> Product:
    slug = name.lower().replace(" ", "-")
    product = Product(
        name=name,
        slug=slug,
        sku=slug.upper(),
        price=Decimal(price),
        stock_quantity=stock,
        category_id=category.id if category else None,
        is_active=is_active,
        description=description,
    )
    session.add(product)
    await session.flush()
    return product


async def make_post(
    session: AsyncSession,
    *,
    author: User,
    title: str,
    status: PostStatus = PostStatus.draft,
) -> Post:
    slug = title.lower().replace(" ", "-")
    assert author.id is not None
    post = Post(
        title=title, slug=slug, content=f"About {title}.", author_id=author.id, status=status
    )
    session.add(post)
    await session.flush()
    return post


async def make_order(
    session: AsyncSession,
    *,
    user: User,
    products: list[Product],
    quantity: int = 1,
    status: OrderStatus = OrderStatus.pending,
) -> Order:
    """An order written straight to the database: stock is left as it is."""
    n = next(_serial)
    assert user.id is not None
    order = Order(
        order_number=f"ORD-TEST-{n:06d}",
        user_id=user.id,
        status=status,
        total_amount=sum((p.price * quantity for p in products), Decimal("0.00")),
    )
    session.add(order)
    await session.flush()
    assert order.id is not None
    session.add_all(
        OrderItem(
            order_id=order.id,
            product_id=p.id,
            quantity=quantity,
            unit_price=p.price,
            total_price=p.price * quantity,
        )
        for p in products
        if p.id is not None
    )
    await session.flush()
    return order


async def make_notification(
    session: AsyncSession, *, user: User, message: str = "Hello", order: Order | None = None
) -> Notification:
    assert user.id is not None
    notification = Notification(
        user_id=user.id, message=message, order_id=order.id if order else None
    )
    session.add(notification)
    await session.flush()
    return notification


async def insert_product(database_url: str, sku: str, stock: int) -> int:
    """An active product committed straight to the database at `database_url` (for tests whose
    requests go through a live server), named and coded `sku`; its id."""
    product_id: int = await scalar(
        database_url,
        "INSERT INTO products (name, slug, sku, price, stock_quantity, is_active)"
        " VALUES ($1, $2, $1, 2.50, $3, true) RETURNING id",
        sku,
        sku.lower(),
        stock,
    )
    return product_id
