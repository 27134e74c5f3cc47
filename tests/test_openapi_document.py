"""The OpenAPI document does not drift by accident.

`tests/openapi.json` is the document clients generate their code from. This test compares the
app's document with it, schema by schema and operation by operation, so that a refactor of the
models or the routes cannot change a property, a constraint, a required field or a status without
a reviewer seeing it. A change made on purpose rewrites the file in the same commit:

    .venv/bin/python -m tests.test_openapi_document
"""

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from api.auth.dependencies import get_optional_user
from api.main import ROUTERS, create_app
from tests.support.app import settings_for_tests

SNAPSHOT = Path(__file__).with_name("openapi.json")


def current_document() -> dict[str, Any]:
    document = create_app(settings_for_tests()).openapi()
    # The release is the package's version, which changes without the contract changing.
    document["info"].pop("version")
    # A schema's required fields are a set: their order follows the model's fields, not the
    # contract.
    for schema in document["components"]["schemas"].values():
        if "required" in schema:
            schema["required"].sort()
    return document


CURRENT = current_document()
RECORDED = json.loads(SNAPSHOT.read_text())


def test_the_same_schemas_are_published() -> None:
    assert sorted(CURRENT["components"]["schemas"]) == sorted(RECORDED["components"]["schemas"])


@pytest.mark.parametrize("name", sorted(RECORDED["components"]["schemas"]))
def test_each_schema_keeps_its_properties_and_constraints(name: str) -> None:
    assert CURRENT["components"]["schemas"].get(name) == RECORDED["components"]["schemas"][name]


def test_the_same_operations_are_published() -> None:
    def operations(document: dict[str, Any]) -> list[str]:
        return sorted(
            f"{verb.upper()} {path}" for path, item in document["paths"].items() for verb in item
        )

    assert operations(CURRENT) == operations(RECORDED)


@pytest.mark.parametrize("path", sorted(RECORDED["paths"]))
def test_each_path_keeps_its_parameters_bodies_and_answers(path: str) -> None:
    assert CURRENT["paths"].get(path) == RECORDED["paths"][path]


def test_the_rest_of_the_document_is_unchanged() -> None:
    def rest(document: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in document.items() if key not in {"paths", "components"}}

    assert rest(CURRENT) == rest(RECORDED)
    assert {k: v for k, v in CURRENT["components"].items() if k != "schemas"} == {
        k: v for k, v in RECORDED["components"].items() if k != "schemas"
    }


OPERATION_ID = re.compile(r"^[a-z]+(-[a-z]+)+$")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def test_operation_ids_are_short_unique_and_name_their_tag() -> None:
    operations = [op for item in CURRENT["paths"].values() for op in item.values()]
    ids = [op["operationId"] for op in operations]

    assert len(set(ids)) == len(ids) == len(operations)
    assert [i for i in ids if not OPERATION_ID.match(i)] == []
    assert all(op["operationId"].startswith(op["tags"][0] + "-") for op in operations)
    assert "products-create-product" in ids


def enums(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "enum" in node:
            yield node
        for value in node.values():
            yield from enums(value)
    elif isinstance(node, list):
        for value in node:
            yield from enums(value)


def test_every_enum_member_has_a_name_a_client_can_use() -> None:
    found = list(enums(CURRENT))
    unnamed = [
        enum["enum"]
        for enum in found
        if not all(IDENTIFIER.match(str(value)) for value in enum["enum"])
        and not all(IDENTIFIER.match(name) for name in enum.get("x-enum-varnames", ["-"]))
    ]

    assert len(found) > 3
    assert unnamed == []
    sort = next(enum for enum in found if "-price" in enum["enum"])
    assert dict(zip(sort["enum"], sort["x-enum-varnames"], strict=True))["-price"] == "PRICE_DESC"


def referenced(node: Any) -> Iterator[str]:
    """The names of the schemas `node` refers to, directly or through the ones it names."""
    seen: set[str] = set()
    pending = [node]
    while pending:
        current = pending.pop()
        if isinstance(current, dict):
            ref = current.get("$ref", "")
            name = ref.removeprefix("#/components/schemas/")
            if ref and name not in seen:
                seen.add(name)
                pending.append(CURRENT["components"]["schemas"][name])
            pending.extend(current.values())
        elif isinstance(current, list):
            pending.extend(current)
    yield from sorted(seen)


def test_answers_mark_every_field_they_always_carry_required() -> None:
    answers = [
        response
        for item in CURRENT["paths"].values()
        for operation in item.values()
        for status, response in operation["responses"].items()
        if status.startswith("2")
    ]
    schemas = CURRENT["components"]["schemas"]
    optional = {
        name: sorted(
            set(schemas[name].get("properties", {})) - set(schemas[name].get("required", []))
        )
        for name in referenced(answers)
    }

    assert "ProductRead" in optional
    assert {name: fields for name, fields in optional.items() if fields} == {}


def calls(dependant: Dependant) -> Iterator[Any]:
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from calls(dependency)


def test_a_route_a_token_may_change_offers_anonymous_access_and_documents_its_401() -> None:
    """Where a token only changes the answer (OptionalUser), a generated client may call without
    one, and a bad one is a documented 401; every other route that reads a token documents its
    401 too."""
    routes = [route for router in ROUTERS for route in router.routes if isinstance(route, APIRoute)]
    optional = {
        (method, route.path_format)
        for route in routes
        if get_optional_user in calls(route.dependant)
        for method in route.methods or ()
    }
    assert ("GET", "/posts/{post_id}") in optional
    for path, item in CURRENT["paths"].items():
        for method, operation in item.items():
            security = operation.get("security", [])
            if (method.upper(), path) in optional:
                assert sorted(map(len, security)) == [0, 1], path
            else:
                assert {} not in security, path
            if security:
                assert "401" in operation["responses"], (method, path)


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(current_document(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}")


# Every amount of money a client reads: a decimal string, its form declared.
MONEY_ANSWERS = {
    ("ProductRead", "price"),
    ("ProductReadWithCategory", "price"),
    ("OrderDetails", "total_amount"),
    ("OrderSummary", "total_amount"),
    ("OrderRead", "total_amount"),
    ("OrderItemRead", "unit_price"),
    ("OrderItemRead", "total_price"),
    ("OrderStats", "total_revenue"),
    ("TopSpender", "total_spent"),
    ("CategoryStats", "avg_price"),
    ("CategoryStats", "min_price"),
    ("CategoryStats", "max_price"),
}


def decimal_fields(schemas: dict[str, Any]) -> set[tuple[str, str]]:
    """The answer schemas' properties that hold money (their titles say so)."""
    money = re.compile(r"(price|amount|revenue|spent)$", re.IGNORECASE)
    return {
        (name, field)
        for name, schema in schemas.items()
        if not name.endswith(("Create", "Update", "Replace"))
        for field in schema.get("properties", {})
        if money.search(field)
    }


def test_every_amount_of_money_answered_is_a_decimal_string_of_a_declared_form() -> None:
    schemas = CURRENT["components"]["schemas"]
    assert decimal_fields(schemas) == MONEY_ANSWERS
    for name, field in MONEY_ANSWERS:
        answer = schemas[name]["properties"][field]
        assert (answer["type"], answer["format"]) == ("string", "decimal"), (name, field)
        assert re.fullmatch(answer["pattern"], answer.get("examples", ["12.5"])[0])
        assert not re.fullmatch(answer["pattern"], "1E+2")  # no exponent a Decimal could print


def test_a_price_sent_says_its_limits_in_both_its_forms() -> None:
    for name in ("ProductCreate", "ProductUpdate"):
        number, text = CURRENT["components"]["schemas"][name]["properties"]["price"]["anyOf"]
        assert (number["type"], number["exclusiveMinimum"], number["maximum"]) == (
            "number",
            0,
            99999999.99,
        )
        assert text["type"] == "string"
        assert re.fullmatch(text["pattern"], "12345678.99")
        assert not re.fullmatch(text["pattern"], "123456789")
        assert not re.fullmatch(text["pattern"], "1.999")


def test_a_keyed_conditional_route_says_both_headers_can_make_a_400() -> None:
    """IdempotentRoute adds its reasons to the route's own, and replaces none."""
    answers = CURRENT["paths"]["/products/{product_id}/stock"]["post"]["responses"]
    assert "If-Match" in answers["400"]["description"]
    assert "Idempotency-Key" in answers["400"]["description"]
    assert "idempotency_key_in_flight" in answers["409"]["description"]
