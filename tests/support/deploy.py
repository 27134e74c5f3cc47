"""Reading the deployment files for the static tests (no Docker engine, no cluster needed), and
compose.yaml's db-setup job run on a test database."""

import asyncio
import re
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from api import dbroles
from api.dbroles import Login
from tests.support.app import ROOT, setting_fields
from tests.support.database import Database, drop_database

SETTINGS = frozenset(setting_fields())
# Read by uvicorn itself (the image's CMD), not by the app's settings.
SERVER_VARIABLES = frozenset({"WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS"})
APP_UID = 10001  # deploy/Dockerfile's ARG APP_UID


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def compose() -> dict[str, Any]:
    document: dict[str, Any] = load_yaml(ROOT / "compose.yaml")
    return document


def interpolate(value: str) -> str:
    """Compose's interpolation with nothing set: `${NAME:-default}` is its default."""
    return re.sub(r"\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}", lambda m: m[2] or "", value)


def compose_variables() -> set[str]:
    """Every variable compose.yaml interpolates."""
    return set(re.findall(r"\$\{([A-Z0-9_]+)", (ROOT / "compose.yaml").read_text()))


def check_jsonschema(builtin: str, path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with one of its vendored schemas (`vendor.compose-spec`, ...)."""
    command = Path(sys.executable).parent / "check-jsonschema"
    return subprocess.run(
        [str(command), "--builtin-schema", builtin, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


@dataclass
class DbSetup:
    """compose.yaml's db-setup job, its own command line, pointed at a test database."""

    database: Database
    out: Path
    owner: Login
    app: Login

    def command(self) -> list[str]:
        command = list(compose()["services"]["db-setup"]["command"])
        assert command[:4] == ["python", "-m", "api", "db-setup"]
        command[command.index("--pgbouncer-out") + 1] = str(self.out)
        return [sys.executable, *command[1:]]

    def run(self, app: Login | None = None) -> None:
        """Run the job (again), as compose does: its URLs in the environment."""
        env = {
            "PATH": "/usr/bin:/bin",
            "SUPERUSER_DATABASE_URL": self.database.url,
            "MIGRATIONS_DATABASE_URL": self.database.url_as(self.owner),
            "DATABASE_URL": self.database.url_as(app or self.app),
        }
        result = subprocess.run(
            self.command(), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr


@asynccontextmanager
async def db_setup_ran(database: Database, out: Path) -> AsyncIterator[DbSetup]:
    """The db-setup job run once on `database` (roles with unique names, as roles belong to the
    whole server); the database and the roles are dropped afterwards."""
    suffix = secrets.token_hex(4)
    setup = DbSetup(
        database,
        out,
        Login(f"setup_owner_{suffix}", dbroles.generate_password()),
        Login(f"setup_app_{suffix}", dbroles.generate_password()),
    )
    try:
        await asyncio.to_thread(setup.run)
        yield setup
    finally:
        await drop_database(database.server_url, database.name, setup.app.role, setup.owner.role)
