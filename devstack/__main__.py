"""Development commands: `python -m devstack <command>`.

serve           the no-Docker stack behind `make run` (devstack/serve.py).
hash-benchmark  what one password verify costs here with the configured argon2id parameters.
"""

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import devstack
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
    bench = commands.add_parser("hash-benchmark", help="time one password verify")
    bench.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve_local(args.host, args.port, args.data_dir.resolve())
    return hash_benchmark(args.rounds)


if __name__ == "__main__":
    sys.exit(main())
