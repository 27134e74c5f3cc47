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

The last test sends workflows: Schemathesis' stateful testing (`as_state_machine`) chains calls
by the document's links, those its dependency analysis infers and a few the test adds to its own
copy (a delete to the reads and writes of the row it deleted, a row's read to the creates that
name it and to its conditional writes), each on the rows earlier answers named. Each scenario
starts from the seed rows alone, and ends with the database's invariants checked; the
superuser it calls as survives them all, by the API's own rules.
"""

import asyncio
import copy
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import asyncpg
import httpx
import hypothesis.strategies as st
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis.errors import Flaky
from schemathesis import Case, CheckContext, CheckFunction, Response
from schemathesis.checks import not_a_server_error
from schemathesis.generation.stateful.state_machine import APIStateMachine
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ensure_resource_availability,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    use_after_free,
)

from api.core.security import password_hash
from api.main import create_app
from api.models import metadata
from tests.support.app import settings_for_tests
from tests.support.client import SECRET_PATTERNS, log_in
from tests.support.database import Database, libpq_url, scalar
from tests.support.live_server import ADMIN_PASSWORD

pytestmark = [pytest.mark.concurrent, pytest.mark.pgbouncer]

SEED = 20261122
MAX_EXAMPLES = 6  # per route: about 300 requests in all

DOCUMENT = create_app(settings_for_tests()).openapi()

schema = schemathesis.openapi.from_dict(
    copy.deepcopy(DOCUMENT),
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


EVERY_TABLE = ", ".join(table.name for table in metadata.sorted_tables)


async def write_seed_rows(database_url: str, *, emptied: bool = False) -> None:
    """The seed rows, committed; `emptied`: in the same transaction as the truncation of every
    table (sequences restarted), so that they are all there is and have the same ids each time."""
    connection = await asyncpg.connect(libpq_url(database_url))
    try:
        async with connection.transaction():
            if emptied:
                await connection.execute(f"TRUNCATE {EVERY_TABLE} RESTART IDENTITY CASCADE")
            await connection.execute(USERS, ADMIN_ID, admin_password_hash())
            await connection.execute(CATALOG_AND_BLOG)
    finally:
        await connection.close()


@pytest.fixture
async def seeded_admin(live_server: str, committed: Database) -> dict[str, str]:
    """The seed rows, committed (the `committed` fixture truncates them after the test), and the
    superuser's bearer token from a login through the live server."""
    await write_seed_rows(committed.url)
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


# Workflows: sequences of calls, each on the rows earlier answers named.
#
# Links the dependency analysis of Schemathesis does not infer, added to the workflows' own copy
# of the document (the app's has none, and serves none). From a delete, with the deleted row's id,
# to the reads and writes of that row: every write route is reached after a deletion.
AFTER_DELETE = {
    "products-delete-product": (
        "product_id",
        [
            "products-get-product",
            "products-update-product",
            "products-change-stock",
            "products-delete-product",
        ],
    ),
    "categories-delete-category": (
        "category_id",
        [
            "categories-get-category",
            "categories-update-category",
            "categories-category-products",
            "categories-delete-category",
        ],
    ),
    "tags-delete-tag": (
        "tag_id",
        ["tags-get-tag", "tags-update-tag", "tags-delete-tag", "posts-tag-post"],
    ),
    "posts-delete-post": (
        "post_id",
        [
            "posts-read-post",
            "posts-update-post",
            "posts-change-status",
            "posts-tag-post",
            "posts-delete-post",
        ],
    ),
    "users-delete-user": (
        "user_id",
        [
            "users-get-user",
            "users-update-user",
            "users-replace-user",
            "users-soft-delete-user",
            "users-delete-user",
            "users-user-with-posts",
            "notifications-list-notifications",
            "orders-list-user-orders",
        ],
    ),
}
# And from an answer carrying a row (the JSON pointer to its id) to the creates whose body names
# it, which the analysis leaves unreachable (no link leads to them and they are not where
# workflows start): an order of a product, a product and a subcategory in a category.
PRODUCT_ANSWERS = [
    ("products-list-with-categories", "200", "/items/0/id"),
    ("products-low-stock", "200", "/items/0/id"),
    ("products-get-product", "200", "/id"),
    ("products-create-product", "201", "/id"),
    ("products-change-stock", "200", "/id"),
]
CATEGORY_ANSWERS = [
    ("categories-list-categories", "200", "/items/0/id"),
    ("categories-get-category", "200", "/id"),
    ("categories-create-category", "201", "/id"),
]
NAMING_IT: dict[str, tuple[list[tuple[str, str, str]], Callable[[str], dict[str, Any]]]] = {
    "orders-create-order": (
        PRODUCT_ANSWERS,
        lambda its_id: {"items": [{"product_id": its_id, "quantity": 1}]},
    ),
    "orders-create-order-with-notifications": (
        PRODUCT_ANSWERS,
        lambda its_id: {"items": [{"product_id": its_id, "quantity": 1}]},
    ),
    "products-create-product": (CATEGORY_ANSWERS, lambda its_id: {"category_id": its_id}),
    "categories-create-category": (CATEGORY_ANSWERS, lambda its_id: {"parent_id": its_id}),
}
# An order's body from a link is the whole body, as a client sends it (for the caller): merged
# into a generated one, it would keep the generated user id and lines after the first, whose
# products and users almost never exist (a 404). Orders generated whole are sent too.
WHOLE_BODY = {"orders-create-order", "orders-create-order-with-notifications"}
# And from a read of one row, with the row's ETag, to its conditional writes: If-Match with the
# tag the row has (a 200), or had before a write in between (a 412).
WITH_ITS_TAG = {
    "products-get-product": (
        "product_id",
        ["products-update-product", "products-change-stock", "products-delete-product"],
    ),
    "categories-get-category": (
        "category_id",
        ["categories-update-category", "categories-delete-category"],
    ),
    "tags-get-tag": ("tag_id", ["tags-update-tag", "tags-delete-tag"]),
    "posts-read-post": (
        "post_id",
        ["posts-update-post", "posts-change-status", "posts-tag-post", "posts-delete-post"],
    ),
    "users-get-user": (
        "user_id",
        ["users-update-user", "users-replace-user", "users-soft-delete-user", "users-delete-user"],
    ),
    "users-read-me": (None, ["users-update-me"]),
}
# And from the orders' list, which nothing links to the order it lists, to that order's reads and
# status changes: the seeded orders' cancels, confirmations and shipments.
ORDER_LISTED = ["orders-get-order", "orders-get-order-details", "orders-change-status"]


def workflow_document(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of `document` for the workflows: the links above in its operations' answers, and
    the conditional headers generated only as the conditions the links do not make.

    Generated, an `If-Match` is any string: almost always a malformed tag (a 400) or another
    row's (a 412), so that a write carrying one never reaches the row, and a scenario gets no
    further. Here it is `*` (no condition) when generated, and the row's own tag when a link
    gives it; a request made invalid on purpose still sends anything (the negative cases). An
    `If-None-Match` is left out of the reads: its only value that is not a malformed or a
    stranger's tag, `*`, answers an existing row's read with a 304 and no body to follow links
    from. The routes' test above sends both headers as generated, and the conditional requests
    have tests of their own (tests/*/test_conditional.py)."""
    linked = copy.deepcopy(document)
    operations = {
        operation["operationId"]: operation
        for path in linked["paths"].values()
        for operation in path.values()
    }

    def link(source: str, status: str, name: str, definition: dict[str, Any]) -> None:
        links = operations[source]["responses"][status].setdefault("links", {})
        links[name] = definition

    for source, (parameter, targets) in AFTER_DELETE.items():
        for target in targets:
            path = {parameter: f"$request.path.{parameter}"}
            link(source, "204", f"{target}-after", {"operationId": target, "parameters": path})
    for target, (sources, body) in NAMING_IT.items():
        for source, status, pointer in sources:
            definition = {"operationId": target, "requestBody": body(f"$response.body#{pointer}")}
            if target in WHOLE_BODY:
                definition["x-schemathesis"] = {"merge_body": False}
            link(source, status, f"{target}-of-it", definition)
    for source, (optional_parameter, targets) in WITH_ITS_TAG.items():
        parameters = {"header.If-Match": "$response.header.ETag"}
        if optional_parameter is not None:
            parameters[optional_parameter] = f"$request.path.{optional_parameter}"
        for target in targets:
            definition = {"operationId": target, "parameters": parameters}
            link(source, "200", f"{target}-if-match", definition)

    for target in ORDER_LISTED:
        path = {"order_id": "$response.body#/items/0/id"}
        link(
            "orders-list-orders",
            "200",
            f"{target}-listed",
            {"operationId": target, "parameters": path},
        )

    for operation in operations.values():
        parameters = operation.get("parameters", [])
        operation["parameters"] = [p for p in parameters if p["name"] != "If-None-Match"]
        for parameter in operation["parameters"]:
            if parameter["name"] == "If-Match":
                parameter["schema"] = {"type": "string", "enum": ["*"]}
    return linked


workflows = schemathesis.openapi.from_dict(
    workflow_document(DOCUMENT),
    config=schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {"mode": "all"},  # in each step, one request in ten is an invalid one
            # The stateful phase on: `as_state_machine` infers the links it has no others for
            # (a read's id to that row's reads and writes) only when it is.
            "phases": {"stateful": {"enabled": True}},
        }
    ),
)

# Two sets of workflows: over every route, and over the shop's alone (products, categories,
# orders), where orders are made, changed and cancelled often enough to put the stock and the
# totals to the test; among every route's links, few lead to an order.
SUITES = {
    "every-route": workflows,
    "the-shop": workflows.include(tag=["products", "categories", "orders"]),
}

# Hypothesis' examples: scenarios, each starting from a list, a create or the caller's profile
# (Hypothesis runs about three times as many, counting those it abandons or repeats).
WORKFLOWS = 30
STEPS = 25  # calls in a scenario, at most

# The deletes of a whole row, and the path parameter that names it (Walk.record).
ROW_DELETES = {source: parameter for source, (parameter, _) in AFTER_DELETE.items()}


@schemathesis.check
def keeps_its_token(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """Every call of the workflows carries the superuser's token, and no route answers a valid
    token with a 401 (a wrong current password is a 400): a 401 means that a call before it
    took the superuser away (deleted, deactivated, its password changed) and that the calls
    after it test nothing past the login."""
    if response.status_code == 401:
        raise AssertionError("the superuser's token was refused: an earlier call destroyed it")
    return None


# Schemathesis' stateful checks too: a row just created is found (ensure_resource_availability),
# a row just deleted is not (use_after_free).
WORKFLOW_CHECKS = [*CHECKS, keeps_its_token, use_after_free, ensure_resource_availability]


@dataclass
class Walk:
    """What the workflows did: in the scenario under way, the rows it deleted (path parameter ->
    ids); over the run, the scenarios, the calls, and the calls each operation made on a row
    deleted before them."""

    deleted: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    on_deleted_rows: Counter[str] = field(default_factory=Counter)
    scenarios: int = 0
    calls: int = 0

    first_failure: str | None = None

    def failed(self, failure: str) -> None:
        self.first_failure = self.first_failure or failure

    def start_scenario(self) -> None:
        self.deleted = defaultdict(set)
        self.scenarios += 1

    def record(self, case: Case[Any], response: Response) -> None:
        """One call and its answer, after the checks. A call on a deleted row is never a 2xx:
        across the steps of a scenario, where Schemathesis' use_after_free looks only at the
        calls that follow a delete by links, and for every method (it skips PUT and POST)."""
        self.calls += 1
        parameters = case.path_parameters or {}
        if any(str(value) in self.deleted[name] for name, value in parameters.items()):
            self.on_deleted_rows[case.operation.label] += 1
            assert not 200 <= response.status_code < 300, (
                f"{case.operation.label} answered {response.status_code} on a deleted row "
                f"({parameters})"
            )
        parameter = ROW_DELETES.get(case.operation.definition.raw["operationId"])
        if parameter is not None and response.status_code == 204:
            self.deleted[parameter].add(str(parameters[parameter]))


# What no sequence of calls may leave in the database (../shared/DESIGN.md), each a query for
# the rows that break it.
INVARIANTS = {
    "a product's stock below zero": "SELECT id FROM products WHERE stock_quantity < 0",
    "an order without items": """SELECT id FROM orders
        WHERE NOT EXISTS (SELECT FROM order_items WHERE order_id = orders.id)""",
    "an order whose total is not the sum of its items": """SELECT orders.id FROM orders
        JOIN order_items ON order_items.order_id = orders.id
        GROUP BY orders.id HAVING orders.total_amount <> sum(order_items.total_price)""",
    "an item whose total is not its quantity times its price": """SELECT id FROM order_items
        WHERE total_price <> quantity * unit_price""",
    "an order's notification sent to another user": """SELECT notifications.id
        FROM notifications JOIN orders ON orders.id = notifications.order_id
        WHERE notifications.user_id <> orders.user_id""",
    "a published post with no publication time": """SELECT id FROM posts
        WHERE status = 'published' AND published_at IS NULL""",
    "a category below itself": """WITH RECURSIVE above (category, ancestor, depth) AS (
            SELECT id, parent_id, 1 FROM categories WHERE parent_id IS NOT NULL
            UNION ALL
            SELECT above.category, categories.parent_id, above.depth + 1
            FROM above JOIN categories ON categories.id = above.ancestor
            WHERE categories.parent_id IS NOT NULL AND above.ancestor <> above.category
              AND above.depth < 100)
        SELECT DISTINCT category FROM above WHERE ancestor = category""",
}
# The superuser the workflows call as, as seeded: there, active, a superuser, same password.
SUPERUSER_INTACT = """SELECT count(*) FROM users
    WHERE id = $1 AND is_active AND is_superuser AND hashed_password = $2"""


async def broken_invariants(database_url: str) -> dict[str, list[Any]]:
    """Each invariant the database breaks, with the ids of the rows that break it."""
    connection = await asyncpg.connect(libpq_url(database_url))
    try:
        broken = {
            invariant: [row[0] for row in await connection.fetch(sql)]
            for invariant, sql in INVARIANTS.items()
        }
        intact = await connection.fetchval(SUPERUSER_INTACT, ADMIN_ID, admin_password_hash())
    finally:
        await connection.close()
    if intact != 1:
        broken["the superuser the workflows call as"] = [ADMIN_ID]
    return {invariant: ids for invariant, ids in broken.items() if ids}


def workflow_machine(
    suite: BaseSchema, base_url: str, headers: dict[str, str], database_url: str, walk: Walk
) -> type[APIStateMachine]:
    """The workflows' state machine: each scenario on the seed rows alone, every call to
    `base_url` with `headers`, every answer checked and recorded in `walk`, and the invariants
    checked at the end of each scenario.

    Each scenario starts from the same rows, with the same ids: Hypothesis replays the start of
    earlier scenarios to make new ones, and a scenario that met other rows than the first time
    (another answer, so other links to follow) would stop the run as a flaky strategy."""

    class Workflows(suite.as_state_machine()):  # type: ignore[misc]
        rule_order_seed = SEED  # which operations start the scenarios: the same every run

        def setup(self) -> None:
            asyncio.run(write_seed_rows(database_url, emptied=True))
            walk.start_scenario()

        def get_call_kwargs(self, case: Case[Any]) -> dict[str, Any]:
            return {"base_url": base_url, "headers": headers, "timeout": 30}

        def validate_response(
            self,
            response: Response,
            case: Case[Any],
            additional_checks: list[CheckFunction] | None = None,
            **kwargs: Any,
        ) -> None:
            try:
                case.validate_response(
                    response,
                    checks=WORKFLOW_CHECKS,
                    transport_kwargs=kwargs,
                    recorder=self.recorder,
                )
                walk.record(case, response)
            except Exception as failure:
                walk.failed(f"{case.operation.label} ({case.formatted_path}): {failure}")
                raise

        def teardown(self) -> None:
            broken = asyncio.run(broken_invariants(database_url))
            if broken:
                walk.failed(f"at the end of a scenario, the database breaks: {broken}")
            assert broken == {}
            super().teardown()

    return seed(SEED)(Workflows)


@pytest.mark.parametrize("suite", SUITES)
async def test_workflows_keep_the_data_whole_and_the_superuser(
    suite: str, live_server: str, committed: Database, seeded_admin: dict[str, str]
) -> None:
    """Scenarios of calls chained by the document's links (inferred, and the ones above), as
    the seeded superuser, on the committed database: every answer as documented, a deleted row
    never answered as present, and after each scenario, the data whole and the superuser intact.

    The workflows cannot destroy the superuser because the API's own rules forbid it, and they
    try: a superuser cannot delete, soft-delete or deactivate itself (a 409, `own_account`, for
    the links from `GET /users/me` to those routes); no request field sets `is_superuser`; a
    password change needs the current password, which no answer carries and the workflows are
    not given; bulk deactivation keeps superusers. Any way past these fails the run: at the
    step (a 401 for the token, `keeps_its_token`) and at the scenario's end (the row)."""
    walk = Walk()
    machine = workflow_machine(SUITES[suite], live_server, seeded_admin, committed.url, walk)
    run_settings = settings(
        max_examples=WORKFLOWS,
        stateful_step_count=STEPS,
        # As the routes' test: nothing replayed or stored, no shrinking, no deadline.
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    try:
        await asyncio.to_thread(machine.run, settings=run_settings)
    except Flaky as flaky:
        # After a failure Hypothesis runs the failing scenario again to report it, and that run
        # can take another turn (seen once: it stopped after its first call, with no error)
        # and be reported as a flaky strategy instead. The failure it found is still one.
        if walk.first_failure is None:
            raise
        raise AssertionError(f"the workflows failed: {walk.first_failure}") from flaky

    # The workflows reached the writes of deleted rows (each refused: Walk.record).
    writes = {
        label: count
        for label, count in walk.on_deleted_rows.items()
        if not label.startswith("GET ")
    }
    assert writes, f"no write reached a deleted row in {walk.calls} calls"

    # And the superuser still logs in, with the name it has now (the workflows may rename it:
    # its token names its id).
    username = await scalar(committed.url, "SELECT username FROM users WHERE id = $1", ADMIN_ID)
    async with httpx.AsyncClient(base_url=live_server, timeout=30) as client:
        headers = await log_in(client, username, ADMIN_PASSWORD)
        me = await client.get("/users/me", headers=headers)
    assert me.status_code == 200, me.text
    assert (me.json()["id"], me.json()["is_active"], me.json()["is_superuser"]) == (
        ADMIN_ID,
        True,
        True,
    )
