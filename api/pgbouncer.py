"""The one PgBouncer configuration, rendered from deploy/pgbouncer/pgbouncer.ini.template for
every path that runs PgBouncer: `make run` and the tests (api/devstack.py) and Docker Compose (its
`db-setup` job runs `python -m api db-setup`). Kubernetes runs CloudNativePG's
Pooler, whose parameters a test holds to the same values.

Prepared statements: PgBouncer >= 1.21 tracks protocol-level prepared statements in transaction
mode (`max_prepared_statements`, on by default from 1.24); older versions, such as Debian 12's
1.18, refuse to start on the unknown key. So the key is written only for a PgBouncer that has it,
always with an explicit value (0 turns tracking off).
"""

from __future__ import annotations

import os
import re
import string
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy" / "pgbouncer" / "pgbouncer.ini.template"
TRACKS_PREPARED_STATEMENTS_FROM = (1, 21)
# What the app's statement cache needs room for; PgBouncer's own default from 1.24 on.
DEFAULT_MAX_PREPARED_STATEMENTS = 200


@dataclass(frozen=True)
class PgBouncerConfig:
    """What differs between the places PgBouncer runs; the template holds the rest."""

    listen_addr: str
    listen_port: int
    server_host: str
    server_port: int
    auth_file: Path
    pidfile: str = ""  # empty: none (a container's PgBouncer runs in the foreground)
    logfile: str = ""  # empty: standard error only
    default_pool_size: int = 20
    max_client_conn: int = 500
    # None: a PgBouncer older than 1.21, which does not know the key; 0: tracking off.
    max_prepared_statements: int | None = None
    extra: str = ""


def tracks_prepared_statements(version: tuple[int, ...]) -> bool:
    return version[:2] >= TRACKS_PREPARED_STATEMENTS_FROM


def parse_version(output: str) -> tuple[int, ...]:
    """(1, 18, 0) from `pgbouncer --version`'s first line, "PgBouncer 1.18.0"."""
    match = re.search(r"PgBouncer (\d+)\.(\d+)(?:\.(\d+))?", output)
    if match is None:
        raise ValueError(f"not a PgBouncer version: {output[:80]!r}")
    return tuple(int(part) for part in match.groups(default="0"))


def render(config: PgBouncerConfig) -> str:
    """The pgbouncer.ini text for `config`."""
    prepared = config.max_prepared_statements
    if prepared is not None and prepared < 0:
        raise ValueError("max_prepared_statements must be 0 (off) or more")
    return string.Template(TEMPLATE.read_text()).substitute(
        listen_addr=config.listen_addr,
        listen_port=config.listen_port,
        server_host=config.server_host,
        server_port=config.server_port,
        auth_file=config.auth_file,
        pidfile=config.pidfile,
        logfile=config.logfile,
        default_pool_size=config.default_pool_size,
        max_client_conn=config.max_client_conn,
        prepared_statements="" if prepared is None else f"max_prepared_statements = {prepared}",
        extra=config.extra,
    )


def userlist(user: str, password: str) -> str:
    """PgBouncer's auth_file line: both quoted, a double quote inside doubled. The password may
    be the server's SCRAM secret for the user, which spares PgBouncer deriving a key at every
    login (it then logs in to the server with the client's own proof)."""
    return '"{}" "{}"\n'.format(user.replace('"', '""'), password.replace('"', '""'))


def replace_file(path: Path, text: str, mode: int) -> None:
    """`path` holds `text` with `mode`, whole: written beside it, then renamed over it, so a
    PgBouncer starting meanwhile reads the old file or the new one, never half of one."""
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    partial.chmod(mode)
    os.replace(partial, path)


def write(directory: Path, config: PgBouncerConfig, *, user: str, password: str) -> Path:
    """Write pgbouncer.ini (0644) and userlist.txt (0600, the password or secret) into
    `directory`; returns the ini's path."""
    directory.mkdir(parents=True, exist_ok=True)
    ini = directory / "pgbouncer.ini"
    replace_file(ini, render(config), 0o644)
    replace_file(directory / "userlist.txt", userlist(user, password), 0o600)
    return ini


def write_for_container(
    directory: Path,
    *,
    server_url: str,
    user: str,
    secret: str,
    listen_port: int,
    auth_file: Path,
    max_prepared_statements: int | None,
    default_pool_size: int,
    max_client_conn: int,
) -> Path:
    """The configuration of a PgBouncer container in front of the server at `server_url` (its
    host and port), for one login: `user` with its SCRAM secret (api/dbroles.py), listening on
    every IPv4 address, logging to standard error, no pid file."""
    url = make_url(server_url)
    if not url.host:
        raise ValueError("the server URL needs a host")
    config = PgBouncerConfig(
        listen_addr="0.0.0.0",
        listen_port=listen_port,
        server_host=url.host,
        server_port=url.port or 5432,
        auth_file=auth_file,
        default_pool_size=default_pool_size,
        max_client_conn=max_client_conn,
        max_prepared_statements=max_prepared_statements,
    )
    return write(directory, config, user=user, password=secret)
