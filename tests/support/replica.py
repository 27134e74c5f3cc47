"""A primary and a real streaming replica, both embedded PostgreSQL 18: the primary a throwaway
cluster, the replica made from it with `pg_basebackup -R` (the wheel's binary) and started on a
port of its own. Whatever server the rest of the suite runs on, the `replica` tests run on this
pair, which they start and remove themselves."""

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import devstack
from devstack import SUPERUSER, EmbeddedPostgres


@dataclass
class ReplicaPair:
    workdir: Path
    primary: EmbeddedPostgres = field(init=False)
    replica: EmbeddedPostgres = field(init=False)

    def __post_init__(self) -> None:
        self.primary = EmbeddedPostgres(self.workdir / "primary", durable=False)
        self.replica = EmbeddedPostgres(self.workdir / "replica", durable=False)

    def start(self) -> "ReplicaPair":
        self.primary.start()
        replica_dir = self.replica.data_dir
        replica_dir.mkdir(parents=True)
        shutil.copy(self.primary.data_dir / ".password", replica_dir / ".password")
        # -R: standby.signal and primary_conninfo (with the password) in the copy; -X stream:
        # the WAL of the backup's own time streamed beside it, so the copy starts consistent.
        args = [str(self.primary.bin_dir / "pg_basebackup"), "-D", str(self.replica.cluster_dir)]
        args += ["-h", "127.0.0.1", "-p", str(self.primary.port), "-U", SUPERUSER]
        args += ["-R", "-X", "stream", "--checkpoint=fast", "--no-sync"]
        env = {**os.environ, "PGPASSWORD": self.primary.password, "PGCONNECT_TIMEOUT": "5"}
        result = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            raise devstack.DevStackError(f"pg_basebackup failed: {result.stderr}")
        self.replica.start()
        self.wait_until_streaming()
        return self

    def wait_until_streaming(self, timeout: float = 30) -> None:
        """Until the primary sees the replica's WAL receiver streaming."""
        deadline = time.monotonic() + timeout
        sql = "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
        while self.primary.psql(sql).stdout.strip() != "1":
            if time.monotonic() > deadline:
                raise devstack.DevStackError("the replica does not stream")
            time.sleep(0.1)

    def wait_until_replayed(self, timeout: float = 30) -> None:
        """Until the replica has replayed everything the primary has written so far."""
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
        self.replica.stop()
        self.primary.stop()
