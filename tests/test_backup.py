"""`make backup` and `make restore` on make run's embedded cluster: a database filled through the
API (users, products, orders with their items, posts with tags) is dumped while make run serves
it, restored into a new cluster, and found there row for row, sequences included, so the next
order gets the next id. The compose stack's round trip is in tests/deploy/test_compose_stack.py."""

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from api.models import metadata
from devstack.backup import Local
from tests.support.app import ROOT
from tests.support.make_run import make_run

pytestmark = pytest.mark.concurrent

ADMIN = {"email": "keeper@example.com", "password": "backup-admin-password"}
SUPERUSER = {"FIRST_SUPERUSER_EMAIL": ADMIN["email"], "FIRST_SUPERUSER_PASSWORD": ADMIN["password"]}


def devstack_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devstack", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )


def bearer(http: httpx.Client, username: str, password: str) -> dict[str, str]:
    login = http.post("/auth/token", data={"username": username, "password": password})
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def fill(http: httpx.Client) -> list[int]:
    """A little of everything through the API; the ids of the orders placed."""
    admin = bearer(http, ADMIN["email"], ADMIN["password"])
    products = []
    for n in range(3):
        product = {"name": f"Thing {n}", "price": f"{n + 1}.25", "sku": f"THING-{n}"}
        created = http.post("/products/", json=product | {"stock_quantity": 50}, headers=admin)
        assert created.status_code == 201, created.text
        products.append(created.json()["id"])
    tag = http.post("/tags/", json={"name": "Kept"}, headers=admin)
    assert tag.status_code == 201, tag.text
    orders = []
    for n in range(3):
        user = {"username": f"buyer{n}", "email": f"buyer{n}@example.com", "password": "p" * 12}
        assert http.post("/users/", json=user).status_code == 201
        customer = bearer(http, user["username"], "p" * 12)
        items = [{"product_id": product, "quantity": n + 1} for product in products]
        order = http.post("/orders/", json={"items": items}, headers=customer)
        assert order.status_code == 201, order.text
        orders.append(order.json()["id"])
        post = http.post("/posts/", json={"title": f"Post {n}", "content": "x"}, headers=customer)
        assert post.status_code == 201, post.text
        tagged = http.put(f"/posts/{post.json()['id']}/tags/{tag.json()['id']}", headers=customer)
        assert tagged.status_code == 200, tagged.text
    return orders


def contents(cluster: Local) -> dict[str, str]:
    """Every table's rows in a stable order, and every sequence's position."""
    found = {}
    for table in [*metadata.sorted_tables, "alembic_version"]:
        name = str(table)
        found[name] = cluster.psql(f"SELECT * FROM {name} AS t ORDER BY t::text")
    sequences = cluster.psql("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'")
    for sequence in sequences.split():
        found[sequence] = cluster.psql(f"SELECT last_value, is_called FROM {sequence}")
    return found


def test_a_backup_of_make_run_restores_row_for_row(tmp_path: Path) -> None:
    source, copy = tmp_path / "source", tmp_path / "copy"
    with make_run(source / "run", **SUPERUSER) as local:
        with httpx.Client(base_url=local.url, timeout=30) as http:
            orders = fill(http)
        made = devstack_command(
            "backup", "--data-dir", str(local.data / "postgres"), "--out", str(tmp_path)
        )  # while make run serves: one snapshot
        assert made.returncode == 0, made.stderr
    [dump] = tmp_path.glob("storefront-*.dump")
    head = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini"))).get_current_head()
    assert dump.name.endswith(f"-{head}.dump")  # named with the schema's revision

    copy_cluster = copy / "data" / "postgres"  # where make_run(copy) keeps it
    truncated = tmp_path / "truncated.dump"
    truncated.write_bytes(dump.read_bytes()[:2000])
    broken = devstack_command("restore", str(truncated), "--data-dir", str(copy_cluster))
    assert broken.returncode == 1
    assert "not a whole dump" in broken.stderr
    restored = devstack_command("restore", str(dump), "--data-dir", str(copy_cluster))
    assert restored.returncode == 0, restored.stderr
    again = devstack_command("restore", str(dump), "--data-dir", str(copy_cluster))
    assert again.returncode == 1
    assert "FORCE=1" in again.stderr  # a database with tables is never overwritten silently

    before, after = Local(source / "run" / "data" / "postgres"), Local(copy_cluster)
    with before.started(fresh_ok=False), after.started(fresh_ok=False):
        original, copied = contents(before), contents(after)
    assert set(copied) == set(original)
    assert len(original) > len(metadata.sorted_tables)  # the sequences are compared too
    for name, rows in original.items():
        assert copied[name] == rows, name
    assert len(original["order_items"].splitlines()) == 9  # three orders of three lines

    with (
        make_run(copy, **SUPERUSER) as local,
        httpx.Client(base_url=local.url, timeout=30) as http,
    ):
        customer = bearer(http, "buyer0", "p" * 12)
        product = http.get("/products/").json()["items"][0]["id"]
        order = http.post(
            "/orders/", json={"items": [{"product_id": product, "quantity": 1}]}, headers=customer
        )
        assert order.status_code == 201, order.text
        assert order.json()["id"] == max(orders) + 1
