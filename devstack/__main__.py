"""Development commands: `python -m devstack <command>`.

serve           the no-Docker stack behind `make run` (devstack/serve.py).
backup          `make backup`: a dump of the compose stack's or make run's database (backup.py).
restore         `make restore FILE=...`: a dump restored there, then migrated.
hash-benchmark  what one password verify costs here with the configured argon2id parameters.
"""

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import devstack
from devstack import backup as backups
from devstack.serve import serve_local


def hash_benchmark(rounds: int) -> int:
    from api.core import security

    hashed = security.password_hash.hash("correct horse battery staple")
    started = time.perf_counter()
    for _ in range(rounds):
        security.password_hash.verify("correct horse battery staple", hashed)
    elapsed = (time.perf_counter() - started) / rounds * 1000
    params = f"m={security.MEMORY_COST_KIB} KiB, t={security.TIME_COST}, p={security.PARALLELISM}"
    print(f"argon2id {params}: {elapsed:.1f} ms per verify (mean of {rounds})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the API on the embedded stack (make run)")
    serve.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    serve.add_argument("--data-dir", type=Path, default=devstack.ROOT / ".data")
    for name, text in (("backup", "dump the database"), ("restore", "restore a dump")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--target", choices=["compose", "local"], default=None)
        command.add_argument("--data-dir", type=Path, default=devstack.ROOT / ".data" / "postgres")
        command.add_argument("--project", default=None, help="the compose project's name")
        command.add_argument(
            "--out", type=Path, default=backups.BACKUPS, help="where dumps are written"
        )
        if name == "restore":
            command.add_argument("file", type=Path)
            command.add_argument("--force", action="store_true", help="replace a database")
    bench = commands.add_parser("hash-benchmark", help="time one password verify")
    bench.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve_local(args.host, args.port, args.data_dir.resolve())
    if args.command in {"backup", "restore"}:
        target = backups.pick(args.target, args.data_dir.resolve(), args.project)
        try:
            if args.command == "backup":
                print(f"wrote {backups.main_backup(target, args.out)} ({target.name})")
            else:
                backups.main_restore(target, args.file, force=args.force, safety=args.out)
                print(f"restored {args.file} into the {target.name} database and migrated it")
        except (backups.BackupError, devstack.DevStackError) as exc:
            print(f"{args.command}: {exc}", file=sys.stderr)
            return 1
        return 0
    return hash_benchmark(args.rounds)


if __name__ == "__main__":
    sys.exit(main())
