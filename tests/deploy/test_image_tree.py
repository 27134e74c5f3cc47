"""The image's own commands in a tree that holds only what deploy/Dockerfile copies (no
devstack/, no tests/): the migrations, db-setup and create-superuser against PostgreSQL, and the
commands that need no database. Development tooling never reaches the image, so nothing the
image runs may import it."""

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from api.core.version import project_version
from devstack.dockerfile import stages
from tests.support.app import ROOT, SECRET_KEY
from tests.support.database import Database, scalar
from tests.support.deploy import db_setup_ran

pytestmark = pytest.mark.concurrent  # databases and roles of its own, committed


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The builder stage's COPYs from the build context, into a directory of their own."""
    tree = tmp_path_factory.mktemp("image") / "app"
    tree.mkdir()
    [builder] = [stage for stage in stages() if stage.name == "builder"]
    copies = [args for args in builder.args("COPY") if not args.startswith("--")]
    assert copies, "the builder copies the code"
    for copy in copies:
        *sources, target = copy.split()
        for source in sources:
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, tree / target, dirs_exist_ok=True)
            else:
                shutil.copy(ROOT / source, tree / target)
    assert not (tree / "devstack").exists()
    return tree


def run_in(tree: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A command of the image's in `tree`, with nothing of the checkout on the path."""
    environment = {"PATH": os.environ["PATH"], "ENVIRONMENT": "test", "SECRET_KEY": SECRET_KEY}
    return subprocess.run(
        [sys.executable, *args],
        cwd=tree,
        env=environment | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_tree_has_no_development_tooling(image_tree: Path) -> None:
    refused = run_in(image_tree, "-c", "import devstack")
    assert refused.returncode != 0
    assert "No module named 'devstack'" in refused.stderr


def test_commands_without_a_database(image_tree: Path) -> None:
    assert run_in(image_tree, "-m", "api", "--help").returncode == 0
    version = run_in(image_tree, "-c", "from api.core.version import VERSION; print(VERSION)")
    assert version.stdout.strip() == project_version()  # pyproject.toml travels with the code
    env = run_in(image_tree, "-m", "api", "compose-env")
    assert env.returncode == 0, env.stderr
    assert "STOREFRONT_APP_PASSWORD=" in env.stdout
    missing = run_in(image_tree, "-m", "api", "db-setup", "--pgbouncer-out", "/nonexistent")
    assert missing.returncode == 2
    assert "SUPERUSER_DATABASE_URL" in missing.stderr


async def test_db_setup_migrations_and_a_superuser_from_the_tree(
    image_tree: Path, make_database: Callable[[str], Awaitable[Database]], tmp_path: Path
) -> None:
    database = await make_database("image_tree")
    async with db_setup_ran(database, tmp_path / "pgbouncer") as setup:
        owner_url, app_url = database.url_as(setup.owner), database.url_as(setup.app)
        migrated = await asyncio.to_thread(
            run_in,
            image_tree,
            "-m",
            "alembic",
            "upgrade",
            "head",
            MIGRATIONS_DATABASE_URL=owner_url,
            DB_APP_ROLE=setup.app.role,
        )
        assert migrated.returncode == 0, migrated.stderr
        created = await asyncio.to_thread(
            run_in,
            image_tree,
            "-m",
            "api",
            "create-superuser",
            "--email",
            "root@example.com",
            DATABASE_URL=app_url,
            FIRST_SUPERUSER_PASSWORD="image-tree-password",
        )
        assert created.returncode == 0, created.stderr
        assert await scalar(
            app_url, "SELECT is_superuser FROM users WHERE email = 'root@example.com'"
        )
