"""`make bench-compose`: the API's speed on the compose stack as shipped (compose.yaml at the
repository's root), with PgBouncer's auth arrangements compared in the same run, as one table.

What it does:

1. `docker compose up --build --wait` of compose.yaml as a project of its own
   (`storefront-bench-XXXX`: its own containers, network and volumes), the API published on a
   free loopback port (API_PORT);
2. loads make bench's dataset (`dataset.sql`, the same rows) into the API's database through
   `docker compose exec db psql`, as the server's superuser (the db container's POSTGRES_USER),
   and signs up make bench's user through the API (for `GET /orders/{id}/details`, its superuser
   too, with the image's `create-superuser` command);
3. takes the API's role and password from the api container's DATABASE_URL, and saves the
   PgBouncer files compose's job wrote (the named volume `pgbouncer-config`);
4. in each round, for each auth arrangement (rotated: round 2 starts with the second, and so
   on, so that no arrangement always runs first): writes the arrangement's files into the
   volume, restarts PgBouncer and waits for the API's /health/ready, logs in, measures every
   request shape with wrk as make bench does (`load.run_wrk`, `wrk.lua`: a warm-up run, then a
   measured run) while reading each container's CPU time from its cgroup before and after, then
   writes the shipped files back and restarts PgBouncer again;
5. prints one table of each row's median round, the ratios of `GET /products/{id}` between the
   arrangements, and writes it all as JSON to `bench/results/` (git-ignored);
6. `docker compose down --volumes` at the end, also on a failure, Ctrl-C or SIGTERM.

The auth arrangements (`--auth`):

- `shipped`: the files as compose's job wrote them;
- `plain`: userlist.txt holds the role's plain-text password, so PgBouncer derives a SCRAM key
  from it at every client login (on NullPool, every request);
- `trust`: `auth_type = trust`, no client authentication at all: the upper bound of any
  arrangement. Its userlist.txt holds the password too: PgBouncer still logs in to PostgreSQL,
  which a SCRAM secret allows only with a client's proof, and a trusted client sends none.

Its own entry point rather than an option of `python -m bench`: another stack (containers
instead of processes of ours), other options (auth arrangements, no worker counts, no pgbench,
no statement counts), and each entry's `--help` lists only what applies to it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

import devstack
from api.pgbouncer import userlist as userlist_line
from bench.dataset import (
    CATEGORIES,
    DATASET,
    ORDERS,
    PRODUCTS,
    USERS,
    Shape,
    dataset_variables,
    deep_cursor,
    psql_script_options,
    send_checked,
    shapes,
)
from bench.load import Load, run_wrk, wrk_figures
from bench.report import Row, aligned, dataset_figures, first_cells, host, median_row, save
from bench.stack import ADMIN, API, Auth, BenchError, at_least_one, entry, log_in, run_quiet, tool

AUTHS = ("shipped", "plain", "trust")
SERVICES = ("db", "pgbouncer", "api")  # the long-running containers whose CPU is read
CONFIG_VOLUME = "pgbouncer-config"  # compose's name of the volume PgBouncer reads
CONFIG_DIR = "/etc/pgbouncer"  # where PgBouncer's container mounts it
INI, USERLIST = "pgbouncer.ini", "userlist.txt"
DEFAULT_SHAPES = "health,product,page1,post1"
API_SETTINGS = ("WEB_CONCURRENCY", "DB_POOL", "DB_STATEMENT_CACHE", "ENVIRONMENT")


def say(message: str) -> None:
    print(f"[bench-compose] {message}", file=sys.stderr, flush=True)


# --- the project ---------------------------------------------------------------------------


class Compose:
    """compose.yaml brought up as a project of its own, its API on a loopback port."""

    def __init__(self, directory: Path, project: str, port: int) -> None:
        self.directory = directory
        self.project = project
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, "API_PORT": str(port), "API_ADDRESS": "127.0.0.1"}

    def command(self, *args: str) -> list[str]:
        project = ["--project-directory", str(self.directory), "--project-name", self.project]
        return ["docker", "compose", *project, *args]

    def run(self, *args: str, stdin: str | None = None, timeout: float | None = 600) -> str:
        """A compose command's standard output; BenchError with its output if it fails."""
        result = run_quiet(
            self.command(*args), env=self.env, cwd=self.directory, input=stdin, timeout=timeout
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()[-3000:]
            raise BenchError(f"docker compose {args[0]} failed ({result.returncode}):\n{output}")
        return result.stdout

    def up(self, wait_timeout: int) -> None:
        try:
            self.run("up", "--build", "--detach", "--wait", "--wait-timeout", str(wait_timeout))
        except BenchError as exc:
            logs = run_quiet(self.command("logs", "--no-color", "--tail", "30"), env=self.env)
            raise BenchError(f"{exc}\n--- the containers' last lines ---\n{logs.stdout}") from exc

    def down(self) -> None:
        """Everything of the project, volumes too. In a session of its own, with our SIGINT and
        SIGTERM ignored meanwhile: a second Ctrl-C does not cut the teardown short."""
        ignored = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in ignored}
        try:
            result = subprocess.run(
                self.command("down", "--volumes", "--remove-orphans", "--timeout", "20"),
                env=self.env,
                cwd=self.directory,
                capture_output=True,
                text=True,
                start_new_session=True,
                check=False,
            )
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if result.returncode != 0:
            say(f"down failed: {result.stderr.strip()[-1000:]}")
            say(f"remove it with: docker compose -p {self.project} down --volumes")
        else:
            say(f"project {self.project} removed, volumes too")

    def container(self, service: str) -> str:
        found = self.run("ps", "--quiet", service).split()
        if not found:
            raise BenchError(f"no running container for the service {service}")
        return found[0]

    def exec(self, service: str, *args: str, stdin: str | None = None) -> str:
        return self.run("exec", "-T", service, *args, stdin=stdin, timeout=None)

    def environment(self, service: str) -> dict[str, str]:
        lines = self.exec(service, "printenv").splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)


def docker(*args: str, stdin: str | None = None) -> str:
    result = run_quiet(["docker", *args], input=stdin, timeout=300)
    if result.returncode != 0:
        raise BenchError(f"docker {args[0]} failed: {(result.stdout + result.stderr)[-2000:]}")
    return result.stdout


def wait_ready(url: str, timeout: float = 120) -> None:
    """Until the API's /health/ready answers 200: a round trip through PgBouncer."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"{url}/health/ready", timeout=3)
            if answer.status_code == 200:
                return
            last = f"{answer.status_code} {answer.text[:300]}"
        except httpx.TransportError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise BenchError(f"/health/ready did not answer 200 in {timeout:.0f} s: {last}")


# --- the containers' CPU time --------------------------------------------------------------


def cgroup_cpu_file(container: str) -> Path | None:
    """The host's file holding the container's CPU time so far (cgroup v1's cpuacct.usage, in
    ns, or v2's cpu.stat, usage_usec), found through its main process's /proc/<pid>/cgroup;
    None when this process cannot see it (in a container of its own, say)."""
    pid = docker("inspect", "--format", "{{.State.Pid}}", container).strip()
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    root = Path("/sys/fs/cgroup")
    v2 = []
    for line in lines:
        number, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if "cpuacct" in controllers.split(","):
            for mount in (controllers, "cpuacct", "cpu,cpuacct"):
                if (candidate := root / mount / relative / "cpuacct.usage").is_file():
                    return candidate
        if number == "0" and not controllers:
            v2 += [root / relative / "cpu.stat", root / "unified" / relative / "cpu.stat"]
    return next((candidate for candidate in v2 if candidate.is_file()), None)


def usage_ns(text: str) -> int:
    """CPU time in ns from cpuacct.usage (a number of ns) or cpu.stat (usage_usec)."""
    match = re.search(r"^usage_usec (\d+)", text, re.MULTILINE)
    return int(match.group(1)) * 1000 if match else int(text.split()[0])


class ContainerCpu:
    """The CPU time each long-running container (its cgroup: every process in it) has used:
    read on the host when it can be, else with `docker exec <container> cat` of its own view."""

    def __init__(self, compose: Compose) -> None:
        self.compose = compose
        self.sources: dict[str, Path | str] = {}
        self.refresh()

    def refresh(self) -> None:
        """Find each container's cgroup again (after a restart)."""
        for service in SERVICES:
            container = self.compose.container(service)
            self.sources[service] = cgroup_cpu_file(container) or container

    def read(self) -> dict[str, int]:
        found = {}
        for service, source in self.sources.items():
            if isinstance(source, Path):
                text = source.read_text()
            else:
                text = docker(
                    "exec",
                    source,
                    "sh",
                    "-c",
                    "cat /sys/fs/cgroup/cpu.stat 2>/dev/null"
                    " || cat /sys/fs/cgroup/cpuacct/cpuacct.usage 2>/dev/null"
                    " || cat /sys/fs/cgroup/cpu,cpuacct/cpuacct.usage",
                )
            found[service] = usage_ns(text)
        return found

    def described(self) -> str:
        kinds = {
            "host cgroup" if isinstance(s, Path) else "docker exec" for s in self.sources.values()
        }
        return ", ".join(sorted(kinds))


def children_seconds() -> float:
    """CPU time of our reaped children (wrk, once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def busy_seconds() -> float:
    """CPU time the whole machine has been busy (steal included), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # guest time is inside user


# --- PgBouncer's auth arrangements ---------------------------------------------------------


@dataclass(frozen=True)
class ConfigFile:
    text: str
    uid: int
    gid: int
    mode: int


# In the app's image, with the directory and the files' names as arguments.
READ_SCRIPT = """
import json, os, sys
found = {}
for name in sys.argv[2:]:
    path = os.path.join(sys.argv[1], name)
    status = os.stat(path)
    with open(path) as source:
        text = source.read()
    found[name] = {"text": text, "uid": status.st_uid, "gid": status.st_gid,
                   "mode": status.st_mode & 0o7777}
print(json.dumps(found))
"""

# Each file replaced whole (a new file renamed over the old), with the owner and mode it had;
# the directory as argument, the files as JSON on standard input.
WRITE_SCRIPT = """
import json, os, sys
for name, file in json.load(sys.stdin).items():
    path = os.path.join(sys.argv[1], name)
    new = path + ".bench-new"
    descriptor = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, file["mode"])
    with os.fdopen(descriptor, "w") as out:
        out.write(file["text"])
    os.chown(new, file["uid"], file["gid"])
    os.chmod(new, file["mode"])
    os.replace(new, path)
"""


class AuthFiles:
    """PgBouncer's pgbouncer.ini and userlist.txt in the project's volume: the shipped ones,
    saved, and each arrangement's, written by a throw-away container of the app's image that
    mounts the volume (as root, keeping each file's owner and mode: PgBouncer's uid must read
    them, and userlist.txt stays 0600)."""

    def __init__(self, compose: Compose, role: str, password: str | None) -> None:
        self.role = role
        self.password = password
        self.image = docker("inspect", "--format", "{{.Config.Image}}", compose.container("api"))
        self.image = self.image.strip()
        labels = [
            f"label=com.docker.compose.project={compose.project}",
            f"label=com.docker.compose.volume={CONFIG_VOLUME}",
        ]
        filters = [arg for label in labels for arg in ("--filter", label)]
        volumes = docker("volume", "ls", "--quiet", *filters).split()
        self.volume = volumes[0] if volumes else f"{compose.project}_{CONFIG_VOLUME}"
        self.shipped = self.read()

    def _docker_run(self, script: str, *args: str, stdin: str | None = None) -> str:
        return docker(
            "run", "--rm", "--interactive", "--network", "none", "--user", "0:0",
            "--volume", f"{self.volume}:{CONFIG_DIR}", "--entrypoint", "python",
            self.image, "-c", script, *args,
            stdin=stdin,
        )  # fmt: skip

    def read(self) -> dict[str, ConfigFile]:
        found = json.loads(self._docker_run(READ_SCRIPT, CONFIG_DIR, INI, USERLIST))
        return {name: ConfigFile(**fields) for name, fields in found.items()}

    def write(self, texts: dict[str, str]) -> None:
        files = {name: asdict(self.shipped[name]) | {"text": text} for name, text in texts.items()}
        self._docker_run(WRITE_SCRIPT, CONFIG_DIR, stdin=json.dumps(files))

    def texts(self, auth: str) -> dict[str, str]:
        """The files of an arrangement (AUTHS)."""
        ini, users = self.shipped[INI].text, self.shipped[USERLIST].text
        if auth in ("plain", "trust"):
            if self.password is None:
                raise BenchError(f"the API's DATABASE_URL has no password: no {auth} arrangement")
            users = with_entry(users, self.role, self.password)
        if auth == "trust":
            ini = with_auth_type(ini, "trust")
        return {INI: ini, USERLIST: users}

    def shipped_description(self) -> str:
        """What the shipped files hold: auth_type and the kind of the role's entry."""
        match = re.search(r"^\s*auth_type\s*=\s*(\S+)", self.shipped[INI].text, re.MULTILINE)
        auth_type = match.group(1) if match else "(the default)"
        entry = entries(self.shipped[USERLIST].text).get(self.role)
        if entry is None:
            kind = f"no entry for {self.role}"
        elif scram := re.match(r"SCRAM-SHA-256\$(\d+):", entry):
            kind = f"{self.role}'s SCRAM secret ({int(scram.group(1)):,} iterations)"
        elif entry.startswith("md5") and len(entry) == 35:
            kind = f"{self.role}'s md5 hash"
        elif entry == self.password:
            kind = f"{self.role}'s plain password"
        else:
            kind = f"{self.role}: an entry that is none of SCRAM, md5, the password"
        return f"auth_type = {auth_type}, userlist.txt: {kind}"


ENTRY = re.compile(r'^"((?:[^"]|"")*)"\s+"((?:[^"]|"")*)"')


def entries(users: str) -> dict[str, str]:
    """userlist.txt's entries: user -> password or secret."""
    found = {}
    for line in users.splitlines():
        if match := ENTRY.match(line.strip()):
            found[match.group(1).replace('""', '"')] = match.group(2).replace('""', '"')
    return found


def with_entry(users: str, role: str, password: str) -> str:
    """userlist.txt with `role`'s entry (if any) replaced by its plain-text password; the other
    entries kept as they are."""
    kept = []
    for line in users.splitlines(keepends=True):
        match = ENTRY.match(line.strip())
        if match is None or match.group(1).replace('""', '"') != role:
            kept.append(line if line.endswith("\n") else f"{line}\n")
    return "".join(kept) + userlist_line(role, password)


def with_auth_type(ini: str, auth_type: str) -> str:
    changed, count = re.subn(
        r"^\s*auth_type\s*=.*$", f"auth_type = {auth_type}", ini, flags=re.MULTILINE
    )
    if not count:
        raise BenchError(f"{INI} has no auth_type line to change")
    return changed


def restart_pgbouncer(compose: Compose, cpu: ContainerCpu) -> None:
    """PgBouncer alone (--no-deps: its config job must not run again and rewrite the files),
    then until the API reaches the database through it."""
    compose.run("restart", "--no-deps", "--timeout", "10", "pgbouncer")
    wait_ready(compose.url)
    cpu.refresh()


# --- measuring -----------------------------------------------------------------------------


def measure(
    wrk: str,
    url: str,
    tokens: dict[str, str],
    shape: Shape,
    load: Load,
    cpu: ContainerCpu,
    auth: str,
) -> Row:
    """A warm-up run, then a measured one, with each container's CPU time and wrk's before and
    after it; the rest of the machine's busy time is `other_cpu_pct`, in % of the machine."""
    if load.warmup:
        run_wrk(wrk, url, tokens, shape, load, load.warmup)
    before, client, busy = cpu.read(), children_seconds(), busy_seconds()
    started = time.monotonic()
    figures = run_wrk(wrk, url, tokens, shape, load, load.duration)
    elapsed = time.monotonic() - started
    after = cpu.read()
    seconds = {name: (after[name] - before[name]) / 1e9 for name in SERVICES}
    seconds["wrk"] = children_seconds() - client
    others = max(0.0, busy_seconds() - busy - sum(seconds.values()))
    requests = max(figures["requests"], 1)
    return Row(
        **wrk_figures(auth, shape, figures),
        cpu_ms={name: round(1000 * value / requests, 3) for name, value in seconds.items()},
        other_cpu_pct=round(100 * others / (elapsed * (os.cpu_count() or 1)), 1),
    )


def load_dataset(compose: Compose, database: str) -> float:
    """make bench's dataset in the API's database, as the server's superuser (over the db
    container's local socket); the seconds it took."""
    superuser = compose.exec("db", "sh", "-c", 'printf %s "${POSTGRES_USER:-postgres}"')
    started = time.perf_counter()
    compose.exec(
        "db", "psql", *psql_script_options(dataset_variables()), "-U", superuser, "-d", database,
        "-f", "-", stdin=DATASET.read_text(),
    )  # fmt: skip
    compose.exec("db", "psql", "-X", "-q", "-U", superuser, "-d", database, "-c", "VACUUM ANALYZE")
    return time.perf_counter() - started


def rotated(items: list[str], round_: int) -> list[str]:
    start = round_ % len(items)
    return items[start:] + items[:start]


# --- main ----------------------------------------------------------------------------------


def listed(text: str, allowed: set[str], what: str) -> list[str]:
    """A comma-separated list, in its order, without repeats; each must be in `allowed`."""
    items = list(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))
    unknown = [item for item in items if item not in allowed]
    if unknown or not items:
        choices = ", ".join(sorted(allowed))
        raise argparse.ArgumentTypeError(
            f"{what}: {', '.join(unknown) or 'none given'}; choose among {choices}"
        )
    return items


SHAPE_KEYS = {shape.key for shape in shapes(2, "") if shape.app == API}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compose",
        description="Measure the API on compose.yaml's stack, PgBouncer's auth arrangements"
        " compared.",
    )
    parser.add_argument(
        "--auth",
        type=lambda text: listed(text, set(AUTHS), "unknown auth arrangements"),
        default=list(AUTHS),
        help="PgBouncer's auth arrangements, in their first round's order (default"
        " shipped,plain,trust): shipped = as compose's job wrote them; plain = the role's"
        " password in userlist.txt; trust = auth_type = trust",
    )
    parser.add_argument(
        "--only",
        type=lambda text: listed(text, SHAPE_KEYS, "unknown request shapes"),
        default=DEFAULT_SHAPES.split(","),
        help=f"request shapes (default {DEFAULT_SHAPES}; make bench's keys of the API's rows)",
    )
    parser.add_argument(
        "--rounds",
        type=at_least_one,
        default=3,
        help="rounds (default 3): each measures every arrangement, rotated; rows are medians",
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds measured per row")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per row")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (as make bench)")
    parser.add_argument(
        "--wrk-cpus",
        default=str(max(cpus)) if len(cpus := os.sched_getaffinity(0)) > 1 else "",
        help="run wrk on these CPUs only (taskset's list; '' lets the kernel place it); default,"
        " as make bench: the last CPU this process may use",
    )
    parser.add_argument("--timeout", type=int, default=10, help="wrk's per-request timeout, s")
    parser.add_argument(
        "--deep-page", type=int, default=4000, help="the deep page (offset and cursor shapes)"
    )
    parser.add_argument(
        "--wait-timeout", type=int, default=300, help="seconds `up --wait` may take"
    )
    parser.add_argument(
        "--project-directory",
        type=Path,
        default=devstack.ROOT,
        help="the directory of the compose.yaml to measure (default: this checkout's)",
    )
    parser.add_argument("--label", default="", help="a note recorded with the results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return entry(
        lambda: run(args),
        report=say,
        interrupted="interrupted; the project is removed",
        failures=(BenchError, subprocess.TimeoutExpired),
    )


def run(args: argparse.Namespace) -> int:
    wrk = tool("wrk", "`make bench-compose` installs it (apt-get install wrk)")
    tool("docker", "a Docker engine with compose v2 runs the stack")
    auths: list[str] = args.auth
    load = Load(
        args.connections, args.threads, 1, args.warmup, args.duration, args.timeout,
        args.wrk_cpus,
    )  # fmt: skip
    directory: Path = args.project_directory.resolve()
    compose = Compose(directory, f"storefront-bench-{secrets.token_hex(2)}", devstack.free_port())
    password = secrets.token_urlsafe(18)
    started_at = datetime.now(UTC)
    clock = time.monotonic()
    try:
        say(f"docker compose up --build --wait: project {compose.project}, API on {compose.url}")
        compose.up(args.wait_timeout)
        up_seconds = time.monotonic() - clock
        settings = compose.environment("api")
        url = make_url(settings.get("DATABASE_URL", ""))
        if not url.username or not url.database:
            raise BenchError("the api container's DATABASE_URL names no role or no database")
        say(f"up in {up_seconds:.0f} s; the API connects as {url.username} to {url.database}")
        load_seconds = load_dataset(compose, url.database)
        say(
            f"dataset loaded in {load_seconds:.1f} s: {PRODUCTS:,} products in {CATEGORIES}"
            f" categories, {USERS:,} users, {ORDERS:,} orders with 1-5 items each"
        )
        files = AuthFiles(compose, url.username, url.password)
        shipped = files.shipped_description()
        say(f"shipped: {shipped}")
        cpu = ContainerCpu(compose)
        cursor = ""
        if {"offset", "cursor"} & set(args.only):
            cursor, _ = deep_cursor(compose.url, args.deep_page)
        todo = [shape for shape in shapes(args.deep_page, cursor) if shape.key in args.only]
        roles: list[Auth] = sorted({shape.auth for shape in todo if shape.auth})
        if "superuser" in roles:
            compose.run(
                "exec", "-T", "--env", f"FIRST_SUPERUSER_PASSWORD={password}", "api",
                "python", "-m", "api", "create-superuser", "--email", ADMIN["email"],
                "--username", ADMIN["username"],
            )  # fmt: skip
        tokens = log_in(compose.url, password, sign_up="user" in roles, roles=roles)
        for shape in todo:  # every shape answers its exact status before any is measured
            headers = {"Authorization": f"Bearer {tokens[shape.auth]}"} if shape.auth else {}
            send_checked(compose.url, shape, headers, 3, f"check-{shape.key}")
        info = {
            **host(wrk, dirty_paths=("compose.yaml", "deploy/", "api/")),
            "docker": docker("version", "--format", "{{.Server.Version}}").strip(),
            "compose": first_text_line(compose.run("version", "--short")),
            "postgres": first_text_line(compose.exec("db", "postgres", "--version")),
            "pgbouncer": first_text_line(compose.exec("pgbouncer", "pgbouncer", "--version")),
            "python_api": first_text_line(compose.exec("api", "python", "--version")),
            "cpu_source": cpu.described(),
            "up_seconds": round(up_seconds),
        }
        runs: dict[tuple[str, str], list[Row]] = {}
        for round_ in range(args.rounds):
            for auth in rotated(auths, round_):
                if auth != "shipped":
                    files.write(files.texts(auth))
                    restart_pgbouncer(compose, cpu)
                tokens = log_in(compose.url, password, sign_up=False, roles=roles)
                for shape in todo:
                    say(
                        f"{auth}: {shape.label} ({load.warmup} s + {load.duration} s,"
                        f" round {round_ + 1} of {args.rounds})"
                    )
                    runs.setdefault((auth, shape.key), []).append(
                        measure(wrk, compose.url, tokens, shape, load, cpu, auth)
                    )
                if auth != "shipped":
                    files.write(files.texts("shipped"))
                    restart_pgbouncer(compose, cpu)
    finally:
        compose.down()
    rows = [median_row(runs[(auth, shape.key)]) for shape in todo for auth in auths]
    config = {
        "project_directory": str(directory),
        "auth": auths,
        "shipped": shipped,
        "api_settings": {name: settings[name] for name in API_SETTINGS if name in settings},
        "api_role": url.username,
        "connections": load.connections,
        "threads": load.threads,
        "wrk_cpus": load.wrk_cpus,
        "warmup_s": load.warmup,
        "duration_s": load.duration,
        "rounds": args.rounds,
        "label": args.label,
    }
    report(rows, info, config, load_seconds, started_at, time.monotonic() - clock)
    return 1 if any(row.failed for row in rows) else 0


def first_text_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "?"


def ratios(rows: list[Row]) -> dict[str, dict[str, float]]:
    """Per request shape, the shipped arrangement's rate over each other one's."""
    rates = {(row.server, row.key): row.rps for row in rows}
    found: dict[str, dict[str, float]] = {}
    for (auth, key), rps in rates.items():
        shipped = rates.get(("shipped", key))
        if auth != "shipped" and shipped and rps:
            found.setdefault(key, {})[f"shipped/{auth}"] = round(shipped / rps, 3)
    return found


def table(rows: list[Row]) -> str:
    head = ["auth", "request", "rps", "p50 ms", "p99 ms", "errors"]
    head += ["CPU ms/req db+pgb+api", "wrk ms/req", "other CPU", "rps by round"]
    lines = [head]
    for row in rows:
        cpu = row.cpu_ms or {}
        lines.append(
            [
                *first_cells(row),
                "+".join(f"{cpu.get(name, 0.0):.2f}" for name in SERVICES),
                f"{cpu.get('wrk', 0.0):.3f}",
                "" if row.other_cpu_pct is None else f"{row.other_cpu_pct:.0f}%",
                " ".join(f"{rps:,.0f}" for rps in row.round_rps or [row.rps]),
            ]
        )
    return aligned(lines, right={2, 3, 4, 5, 7, 8})


def report(
    rows: list[Row],
    info: dict[str, Any],
    config: dict[str, Any],
    load_seconds: float,
    started_at: datetime,
    seconds: float,
) -> None:
    found = ratios(rows)
    settings = ", ".join(f"{k}={v}" for k, v in config["api_settings"].items())
    print()
    print(
        f"make bench-compose, {started_at:%Y-%m-%d %H:%M} UTC, {seconds / 60:.1f} min:"
        f" {info['cores']} cores ({info['cpu']}), docker {info['docker']},"
        f" compose {info['compose']}"
    )
    print(
        f"stack: {config['project_directory']}/compose.yaml at {info['commit']}:"
        f" {info['postgres']}, {info['pgbouncer']}, the API on {info['python_api']}"
        f" ({settings}) as {config['api_role']}"
    )
    print(f"shipped: {config['shipped']}")
    print(
        f"load: wrk, {config['connections']} connections, {config['threads']} thread"
        + ("s" if config["threads"] > 1 else "")
        + ","
        f" {config['warmup_s']} s warm-up + {config['duration_s']} s per row"
        + (f", the median of {config['rounds']} rounds" if config["rounds"] > 1 else "")
        + " (arrangements rotated between rounds)"
        + (f"; wrk on CPUs {config['wrk_cpus']}" if config["wrk_cpus"] else "")
    )
    print()
    print(table(rows))
    print()
    product = found.get("product", {})
    if product:
        cells = ", ".join(f"{name} {value:.2f}x" for name, value in product.items())
        print(f"GET /products/{{id}}, requests/s: {cells}")
    for line in (
        "CPU ms/req: each container's CPU time (its cgroup: "
        + info["cpu_source"]
        + ") per request, db, PgBouncer, API.",
        "wrk ms/req: the load generator's. other CPU: the rest of the machine during the row",
        "(the engine forwarding the published port, dockerd, other jobs), in % of the machine.",
    ):
        print(line)
    document = {
        "started_at": started_at.isoformat(),
        "seconds": round(seconds),
        "machine": info,
        "config": config,
        "dataset": dataset_figures(load_seconds),
        "rows": [asdict(row) | {"failed": row.failed} for row in rows],
        "ratios": found,
        "load_average_at_end": os.getloadavg(),
    }
    save(document, f"compose-{started_at:%Y%m%d-%H%M%S}.json", "compose-latest.json")


if __name__ == "__main__":
    sys.exit(main())
