"""Password hashing: argon2id through pwdlib, off the event loop.

Parameters: OWASP's minimum for argon2id (19 MiB, 2 iterations, 1 lane). pwdlib's default
(64 MiB, t=3, p=4) costs several times as much per verify, which a login pays on a worker's
thread; `make hash-benchmark` measures both on the machine at hand.
"""

import os

import anyio
import anyio.to_thread
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

MEMORY_COST_KIB = 19_456
TIME_COST = 2
PARALLELISM = 1

password_hash = PasswordHash(
    (Argon2Hasher(memory_cost=MEMORY_COST_KIB, time_cost=TIME_COST, parallelism=PARALLELISM),)
)


# One hash per core at a time: each takes 19 MiB and a core, so a sign-up burst queues here
# instead of filling anyio's 40 default threads (760 MiB) and starving other thread work.
_hashing = anyio.CapacityLimiter(os.cpu_count() or 1)


async def hash_password(password: str) -> str:
    return await anyio.to_thread.run_sync(password_hash.hash, password, limiter=_hashing)


async def verify_password(password: str, hashed: str) -> bool:
    return await anyio.to_thread.run_sync(password_hash.verify, password, hashed, limiter=_hashing)
