"""Property-based: Schemathesis generates requests for every route of the OpenAPI document, valid
and invalid, and sends them to a real uvicorn, through PgBouncer, to PostgreSQL. No answer is a
5xx, and every answer is one the document promises: a documented status code and content type,
and a body that matches the documented schema.

Each route is one test with a fixed seed and a small budget; before it, the committed database
gets a few rows with small ids (a user, categories, products, a tag, posts, orders with their
items and notifications), so that generated ids
find rows and the answers carry bodies, and a superuser logs in through the live server. The
requests go out with the superuser's token — past the 401, into validation and the database — and
about one in four without any, as an anonymous caller.

The document is the app's own (`create_app().openapi()`, loaded at import so that each route is a
test of its own); the first test checks that the live server serves that same document.
Schemathesis' fixture-loaded schemas (`schemathesis.pytest.from_fixture`) are not an option on
pytest 9.2: schemathesis 4.32.5 sets `request.node._nodeid`, which pytest 9.2 removed. On pytest
9.2 the routes' node ids also lose their `[METHOD /path]` suffix (their names keep it): select
routes with `-k`, as in `-k tags`.
"""

from functools import cache
from typing import Any

import asyncpg
import httpx
import hypothesis.strategies as st
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis import Case, CheckContext, Response
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.core.security import password_hash
from api.main import create_app
from tests.support.app import settings_for_tests
from tests.support.client import SECRET_PATTERNS
from tests.support.database import Database, libpq_url
from tests.support.live_server import ADMIN_PASSWORD

pytestmark = [pytest.mark.concurrent, pytest.mark.pgbouncer]

SEED = 20261122
MAX_EXAMPLES = 6  # per route: about 300 requests in all

schema = schemathesis.openapi.from_dict(
    create_app(settings_for_tests()).openapi(),
    config=schemathesis.Config.from_dict(
        {
            # One seed, from which Schemathesis derives each route's: the same requests every run.
            "seed": SEED,
            "generation": {"mode": "all"},  # valid requests and invalid ones
            # Random generation only. The coverage phase (every boundary and every kind of invalid
            # value of every parameter, deterministically) adds about 2,000 requests and more
            # than a minute. The document has no examples; the stateful phase is not a pytest one.
            "phases": {
                "examples": {"enabled": False},
                "coverage": {"enabled": False},
                "stateful": {"enabled": False},
            },
        }
    ),
)


@schemathesis.check
def no_secrets(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """No answer carries a password hash or a token, but a login's own token (as `client_for`
    checks for the in-process tests)."""
    if case.operation.path == "/auth/token" and response.status_code == 200:
        return None
    if any(pattern.search(response.text) for pattern in SECRET_PATTERNS):
        # Not an `assert` on the match: pytest would print the secret with the failure.
        raise AssertionError("the answer carries a password hash or a token")
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    # No answer documents a header today: this one starts to check when one does.
    response_headers_conformance,
    no_secrets,
]

# Far from the small ids the generated requests use, so that none deletes or demotes the caller.
ADMIN_ID = 1_000_003


@cache
def admin_password_hash() -> str:
    return password_hash.hash(ADMIN_PASSWORD)


USERS = """INSERT INTO users (id, username, email, hashed_password, is_superuser)
    VALUES ($1, 'fuzz_admin', 'fuzz_admin@example.com', $2, true),
           (DEFAULT, 'fuzz_user', 'fuzz_user@example.com', $2, false)"""
# After the truncation that restarts the sequences, these rows have ids 1 and 2 (the first time
# the database is used, the default categories come first).
CATALOG_AND_BLOG = f"""
INSERT INTO categories (name, slug) VALUES ('Fuzz', 'fuzz');
INSERT INTO categories (name, slug, parent_id)
SELECT 'Fuzz Child', 'fuzz-child', id FROM categories WHERE slug = 'fuzz';
INSERT INTO products (name, slug, sku, price, stock_quantity, is_active, category_id)
SELECT 'Fuzz One', 'fuzz-one', 'FUZZ-1', 9.99, 5, true, id FROM categories WHERE slug = 'fuzz-child'
UNION ALL SELECT 'Fuzz Two', 'fuzz-two', 'FUZZ-2', 120.00, 0, false, NULL;
INSERT INTO tags (name, slug) VALUES ('fuzz', 'fuzz');
INSERT INTO posts (title, slug, content, status, view_count, author_id, published_at)
VALUES ('Published', 'published', 'Text.', 'published', 0, {ADMIN_ID}, now()),
       ('Draft', 'draft', 'Text.', 'draft', 0, {ADMIN_ID}, NULL);
INSERT INTO post_tags (post_id, tag_id)
SELECT posts.id, tags.id FROM posts, tags WHERE posts.slug = 'published' AND tags.slug = 'fuzz';
INSERT INTO orders (order_number, status, total_amount, user_id)
VALUES ('ORD-FUZZ-1', 'pending', 9.99, {ADMIN_ID}),
       ('ORD-FUZZ-2', 'confirmed', 9.99, (SELECT id FROM users WHERE username = 'fuzz_user'));
INSERT INTO order_items (order_id, product_id, quantity, unit_price, total_price)
SELECT orders.id, products.id, 1, 9.99, 9.99
FROM orders, products WHERE products.sku = 'FUZZ-1';
INSERT INTO notifications (user_id, message, order_id)
SELECT user_id, 'Order ' || order_number || ' received', id FROM orders;
"""


@pytest.fixture
async def seeded_admin(live_server: str, committed: Database) -> dict[str, str]:
    """The seed rows, committed (the `committed` fixture truncates them after the test), and the
    superuser's bearer token from a login through the live server."""
    connection = await asyncpg.connect(libpq_url(committed.url))
    try:
        async with connection.transaction():
            await connection.execute(USERS, ADMIN_ID, admin_password_hash())
            await connection.execute(CATALOG_AND_BLOG)
    finally:
        await connection.close()
    async with httpx.AsyncClient(base_url=live_server, timeout=30) as client:
        login = await client.post(
            "/auth/token", data={"username": "fuzz_admin", "password": ADMIN_PASSWORD}
        )
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def test_the_live_server_serves_the_fuzzed_document(live_server: str) -> None:
    served = httpx.get(f"{live_server}/openapi.json", timeout=30)
    assert served.json() == create_app(settings_for_tests()).openapi()


@schema.parametrize()
@schema.given(anonymous=st.sampled_from([False, False, False, True]))
@settings(
    max_examples=MAX_EXAMPLES,
    # No example database (nothing replayed from an earlier run, nothing written), no shrinking
    # (a failure is reported as found, with the request that reproduces it), no deadline (the
    # answers come over the network, and sign-ups and logins hash passwords).
    database=None,
    phases=[Phase.explicit, Phase.generate],
    deadline=None,
    # The superuser and the seed rows are meant to be shared by a route's examples; generation
    # speed is Hypothesis' concern, not the API's.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_route_answers_as_documented(
    case: Case[Any], anonymous: bool, live_server: str, seeded_admin: dict[str, str]
) -> None:
    headers: dict[str, Any] = {} if anonymous else seeded_admin
    case.call_and_validate(base_url=live_server, headers=headers, checks=CHECKS, timeout=30)
