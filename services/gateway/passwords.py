"""Password hashing: argon2id (argon2-cffi), off the event loop and bounded per process.

Each hash takes `MEMORY_KIB` of memory and about 60 ms of one core here (time cost 3, 32 MiB, one lane,
measured on the development machine; RFC 9106 and OWASP's argon2id settings are in this range). At most
`CONCURRENT_HASHES` run at once in a process, on threads of their own, so 50 parallel log-ins use at most
4 × 32 MiB and never starve the default thread pool; more than `MAX_WAITING` waiting is refused with
`HashingBusy` (a 503), so a flood queues no unbounded work.

Hashes from before argon2 (`scrypt$N$r$p$salt$digest`, stdlib) still verify; `needs_rehash` says when a
stored hash should be replaced after a successful log-in (old scheme, or older argon2 parameters).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

TIME_COST, MEMORY_KIB, PARALLELISM = 3, 32 * 1024, 1
CONCURRENT_HASHES = 4
MAX_WAITING = 64

_HASHER = PasswordHasher(
    time_cost=TIME_COST,
    memory_cost=MEMORY_KIB,
    parallelism=PARALLELISM,
    hash_len=32,
    salt_len=16,
    type=Type.ID,
)
_SCRYPT_MAXMEM = 64 * 1024 * 1024

T = TypeVar("T")


class HashingBusy(Exception):
    """More password checks are waiting than the process takes on: answer 503 and let the client retry."""


class _Bounded:
    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=CONCURRENT_HASHES, thread_name_prefix="argon2")
        self._lock = threading.Lock()
        self._pending = 0

    async def run(self, work: Callable[..., T], *args: str) -> T:
        with self._lock:
            if self._pending >= CONCURRENT_HASHES + MAX_WAITING:
                raise HashingBusy("too many password checks at once")
            self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)
        finally:
            with self._lock:
                self._pending -= 1


_BOUNDED = _Bounded()


def hash_password(password: str) -> str:
    """argon2id with this module's parameters (blocking: use `hash_async` from the event loop)."""
    return _HASHER.hash(password)


def _verify_scrypt(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=_SCRYPT_MAXMEM,
        )
    except ValueError:
        return False
    return scheme == "scrypt" and hmac.compare_digest(actual, expected)


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` is the one `stored` was made from (blocking: use `verify_async` from the event
    loop). A malformed hash verifies nothing."""
    if stored.startswith("scrypt$"):
        return _verify_scrypt(password, stored)
    try:
        return _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """Whether a hash that just verified should be replaced by one with the current scheme and costs."""
    if not stored.startswith("$argon2id$"):
        return True
    try:
        return _HASHER.check_needs_rehash(stored)
    except InvalidHashError:
        return True


async def hash_async(password: str) -> str:
    """`hash_password` on the bounded hashing threads; raises HashingBusy when too many wait."""
    return await _BOUNDED.run(hash_password, password)


async def verify_async(password: str, stored: str) -> bool:
    """`verify_password` on the bounded hashing threads; raises HashingBusy when too many wait."""
    return await _BOUNDED.run(verify_password, password, stored)


@cache
def dummy_hash() -> str:
    """Verified against when the account does not exist, so both answers take the same time."""
    return hash_password(secrets.token_hex(16))
