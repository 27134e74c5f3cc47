"""Seed 003's curl walkthrough as a client of any base URL walks it (walk, as ADMIN): the live
server's in tests/test_walkthrough.py, the compose stack's in tests/deploy/test_compose_stack.py."""

import httpx

from tests.support.client import log_in

ADMIN = {"email": "admin@example.com", "password": "walkthrough-admin-password"}


async def walk(http: httpx.AsyncClient) -> None:
    admin = await log_in(http, ADMIN["email"], ADMIN["password"])

    # Create a category: Electronics exists already (the data migration), so look it up.
    category = {"name": "Electronics", "slug": "electronics", "description": "Electronic devices"}
    created = await http.post("/categories/", json=category, headers=admin)
    assert created.status_code == 409, created.text
    categories = (await http.get("/categories/", params={"size": 100})).json()["items"]
    [electronics] = [c for c in categories if c["slug"] == "electronics"]

    # Create a product (the seed sends the price as a number).
    product = {
        "name": "Wireless Headphones",
        "slug": "wireless-headphones",
        "price": 79.99,
        "sku": "WH-001",
        "stock_quantity": 50,
        "category_id": electronics["id"],
    }
    created = await http.post("/products/", json=product, headers=admin)
    assert created.status_code == 201, created.text
    product_id = created.json()["id"]
    assert created.json()["price"] == "79.99"

    # Create a user, who then logs in.
    user = {
        "username": "johndoe",
        "email": "john@example.com",
        "password": "SecurePass123",
        "full_name": "John Doe",
    }
    created = await http.post("/users/", json=user)
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]
    john = await log_in(http, "johndoe", "SecurePass123")

    # Create an order (the seed names the user in the body: their own id is accepted).
    order = {"user_id": user_id, "items": [{"product_id": product_id, "quantity": 2}]}
    created = await http.post("/orders/", json=order, headers=john)
    assert created.status_code == 201, created.text
    order_id = created.json()["id"]
    assert created.json()["total_amount"] == "159.98"

    # Get order details.
    fetched = await http.get(f"/orders/{order_id}", headers=john)
    assert fetched.status_code == 200
    assert fetched.json()["items"][0]["product"]["sku"] == "WH-001"
    details = await http.get(f"/orders/{order_id}/details", headers=john)
    assert details.json()["user"]["username"] == "johndoe"

    # Update order status (a superuser's move).
    updated = await http.patch(
        f"/orders/{order_id}/status", params={"new_status": "confirmed"}, headers=admin
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["status"] == "confirmed"

    # Get order statistics.
    stats = (await http.get("/orders/stats/summary", headers=admin)).json()
    assert stats["total_orders"] == 1
    assert stats["total_revenue"] == "159.98"
    assert stats["orders_by_status"]["confirmed"] == 1

    # Check health.
    assert (await http.get("/health")).json() == {"status": "ok"}
    assert (await http.get("/health/db", headers=admin)).json()["pool_mode"] == "null"

    # What the walk left behind: stock taken, and John told twice.
    assert (await http.get(f"/products/{product_id}")).json()["stock_quantity"] == 48
    notes = (await http.get(f"/users/{user_id}/notifications", headers=john)).json()
    assert [n["order_id"] for n in notes["items"]] == [order_id, order_id]
    assert "confirmed" in notes["items"][0]["message"]
