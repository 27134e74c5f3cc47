"""api/launch.py: the app as its servers launch it. Each check runs in a new Python process, so
that no test has touched the collector or the allocator before it."""

import os
import subprocess
import sys

import pytest
from asgi_lifespan import LifespanManager

from api import launch
from tests.support.app import ROOT, settings_for_tests


def in_fresh_interpreter(script: str, env: dict[str, str] | None = None) -> str:
    """What `script` prints, run by a new Python process with `env` added to the environment."""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    return result.stdout


def test_a_password_hash_leaves_no_memory_resident_with_the_launchs_malloc_env() -> None:
    """Hashes in worker threads, as the login route runs them: without MALLOC_ENV glibc keeps
    a hash's 19 MiB resident from the second one on."""
    script = (
        "import asyncio, anyio.to_thread\n"
        "from api.core.security import password_hash\n"
        "def rss(): return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])\n"
        "async def hashes():\n"
        "    for _ in range(3): await anyio.to_thread.run_sync(password_hash.hash, 'pw')\n"
        "before = rss(); asyncio.run(hashes()); print(rss() - before)\n"
    )
    grown = int(in_fresh_interpreter(script, launch.MALLOC_ENV))
    assert grown < 8 * 1024, f"{grown} KiB more resident"


def test_the_launched_app_settles_the_garbage_collector_once_started() -> None:
    """api.launch's app freezes what is alive after its startup and raises the youngest
    generation's threshold; api.main's app, built in the same way, leaves both alone."""
    script = (
        "import asyncio, gc\n"
        "from asgi_lifespan import LifespanManager\n"
        "from api import launch, main\n"
        "from tests.support.app import settings_for_tests\n"
        "async def started(factory):\n"
        "    async with LifespanManager(factory(settings_for_tests())):\n"
        "        print(gc.get_freeze_count(), gc.get_threshold()[0])\n"
        "asyncio.run(started(main.create_app)); asyncio.run(started(launch.create_app))\n"
    )
    app_alone, launched = (line.split() for line in in_fresh_interpreter(script).splitlines())
    assert app_alone == ["0", "700"]
    assert int(launched[0]) > 10_000  # the modules' objects, the app's
    assert launched[1] == "20000"


async def test_the_collector_is_settled_after_the_apps_own_startup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In this process, with the settling recorded instead of done: it comes once the app's own
    startup has given it its sessions."""
    settled: list[bool] = []
    app = launch.create_app(settings_for_tests())
    monkeypatch.setattr(
        launch,
        "settle_garbage_collector",
        lambda: settled.append(hasattr(app.state, "sessionmaker")),
    )

    async with LifespanManager(app):
        assert settled == [True]
