"""Categories: queries and rules. Functions flush, never commit."""

from sqlalchemy.orm import selectinload
from sqlmodel import col, delete, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.categories.models import (
    REFERENCES,
    UNIQUE_FIELDS,
    Category,
    CategoryCreate,
    CategoryReadWithChildren,
    CategoryUpdate,
)
from api.core import conditional
from api.core.conditional import Condition
from api.core.db import constraint_errors, update_or_404
from api.core.errors import FieldError, InvalidReference, NotFound
from api.core.pagination import Page, PageParams, apaginate

# The transaction-scoped advisory lock that serializes moves in the category tree (a
# constant of our own: PostgreSQL's advisory locks are keyed by any bigint).
REPARENTING = 0x63617465676F7279  # "category"


async def create_category(*, session: AsyncSession, category_in: CategoryCreate) -> Category:
    db_category = Category.model_validate(category_in)
    async with constraint_errors(session, unique=UNIQUE_FIELDS, references=REFERENCES):
        session.add(db_category)
    return db_category


async def get_category(*, session: AsyncSession, category_id: int) -> Category:
    """One category with its children (one extra statement, whatever their number)."""
    query = (
        select(Category)
        .where(Category.id == category_id)
        .options(selectinload(Category.children))  # type: ignore[arg-type]
        .execution_options(populate_existing=True)
    )
    db_category = (await session.exec(query)).first()
    if db_category is None:
        raise NotFound("Category", category_id)
    return db_category


async def list_categories(*, session: AsyncSession, params: PageParams) -> Page[Category]:
    query = select(Category).order_by(col(Category.id))
    page: Page[Category] = await apaginate(session, query, params)
    return page


async def check_unchanged(
    *, session: AsyncSession, category_id: int, if_match: Condition | None
) -> Category | None:
    """A write's If-Match: the category locked, read with its children as its GET shows it, and
    its tag compared (a 412 when stale); the locked row, or None without a condition. A child's
    change does not lock the parent: the tag compared is the one the children had when the
    category was locked, and two writes of the category itself wait for each other."""
    return await conditional.check(
        session,
        if_match,
        Category,
        category_id,
        CategoryReadWithChildren,
        options=[selectinload(Category.children)],  # type: ignore[arg-type]
    )


async def update_category(
    *,
    session: AsyncSession,
    category_id: int,
    category_in: CategoryUpdate,
    if_match: Condition | None = None,
) -> Category:
    """A new parent below the category (or the category itself) is a 422. Moves are checked and
    made one at a time: two moves checked at once could each see no cycle and together make
    one (A under B and B under A), which every walk of the tree would follow forever."""
    changes = category_in.model_dump(exclude_unset=True)
    parent_id = changes.get("parent_id")
    if parent_id is not None:
        await session.exec(select(func.pg_advisory_xact_lock(REPARENTING)))
        if await _is_in_subtree(session, root=category_id, node=parent_id):
            raise InvalidReference(
                "A category cannot be its own ancestor.",
                errors=[FieldError(field="parent_id", message="is this category or one below it")],
            )
    # After the moves' lock, which a move without If-Match takes before the row's.
    await check_unchanged(session=session, category_id=category_id, if_match=if_match)
    db_category = await update_or_404(
        session, Category, category_id, changes, unique=UNIQUE_FIELDS, references=REFERENCES
    )
    await session.refresh(db_category, ["children"])
    return db_category


async def delete_category(*, session: AsyncSession, category_id: int) -> None:
    """Delete a category; its children become top-level (the foreign key's ON DELETE SET NULL,
    not a list the ORM loaded: a child moved elsewhere in the meantime stays where it was moved).
    What becomes of its products is the products package's (`products.service.delete_category`).
    """
    deleted = delete(Category).where(col(Category.id) == category_id).returning(col(Category.id))
    if (await session.exec(deleted)).first() is None:
        raise NotFound("Category", category_id)


async def _is_in_subtree(session: AsyncSession, *, root: int, node: int) -> bool:
    """Whether `node` is `root` or one of its descendants (a recursive query). UNION, not UNION
    ALL: a cycle already in the table (written before moves were serialized, or by hand) ends
    the walk instead of making it endless."""
    tree = select(col(Category.id)).where(Category.id == root).cte(recursive=True)
    tree = tree.union(select(col(Category.id)).where(col(Category.parent_id) == tree.c.id))
    found = await session.exec(select(tree.c.id).where(tree.c.id == node))
    return found.first() is not None
