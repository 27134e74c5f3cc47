"""compose.yaml for real, opt-in: `STOREFRONT_COMPOSE_TEST=1` and a Docker engine (`make
compose-test`; CI runs it). Builds the image, `docker compose up --wait` on a project of its own
(its own volumes, a free host port), checks readiness through PgBouncer, creates a superuser with
the image's own command, walks seed 003's walkthrough, and tears everything down, volumes too.

Without the variable it is skipped, saying how to run it; with the variable and no engine it
fails: whoever asked for it should hear that it did not run."""

import os
import secrets
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from api import devstack
from tests.conftest import docker_reachable
from tests.helpers import ROOT
from tests.test_walkthrough import ADMIN, walk

OPT_IN = "STOREFRONT_COMPOSE_TEST"

pytestmark = pytest.mark.compose


def compose_command(project: str) -> list[str]:
    return ["docker", "compose", "--project-directory", str(ROOT), "--project-name", project]


def run(command: list[str], env: dict[str, str], timeout: float = 900) -> None:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def stack() -> Iterator[str]:
    """The whole stack from compose.yaml, up and healthy; its API's base URL."""
    if os.environ.get(OPT_IN) != "1":
        pytest.skip(f"opt-in: {OPT_IN}=1 with a Docker engine (make compose-test)")
    if not docker_reachable():
        pytest.fail(f"{OPT_IN}=1, but no Docker engine answers", pytrace=False)
    project = f"storefront-test-{secrets.token_hex(3)}"
    port = devstack.free_port()
    env = {**os.environ, "API_PORT": str(port)}
    compose = compose_command(project)
    try:
        run([*compose, "up", "--build", "--detach", "--wait", "--wait-timeout", "300"], env)
        run(
            [
                *compose,
                "exec",
                "--no-TTY",
                "--env",
                f"FIRST_SUPERUSER_PASSWORD={ADMIN['password']}",
                "api",
                "python",
                "-m",
                "api",
                "create-superuser",
                "--email",
                ADMIN["email"],
            ],
            env,
        )
        yield f"http://127.0.0.1:{port}"
    finally:
        logs = subprocess.run(
            [*compose, "logs", "--no-color", "--tail", "50"],
            env=env,
            capture_output=True,
            text=True,
        )
        print(logs.stdout[-20_000:])  # shown by pytest when the test failed
        run([*compose, "down", "--volumes", "--remove-orphans", "--timeout", "20"], env)


async def test_compose_up_serves_the_walkthrough(stack: str) -> None:
    async with httpx.AsyncClient(base_url=stack, timeout=30) as http:
        ready = await http.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["pool_mode"] == "null"
        await walk(http)
