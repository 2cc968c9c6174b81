"""Rate limits, count budgets and throttles of ``veil serve``: :class:`Limits`.

Three kinds of limit guard the gateway, all keyed on a service key's id (or,
before authentication, on the client's address):

- **Rate limits** (``hit``, ``hit_ip``): the `limits` library's moving window,
  "at most N requests in any window of length w". A fixed window lets up to 2N
  through across a boundary (slowapi's default let ~10 requests through a
  5/min limit, FIELD-NOTES), which is why it is not used.
- **Count budgets** (``spend``): the records a key may have answered by one
  served model over its whole life (the policy's ``queries_per_key``). Output
  shaping only slows model extraction; a per-key budget bounds it. The check
  and the addition are one atomic step (a Lua script on Redis, a lock in
  memory), so concurrent requests, from any number of workers, never take a
  key past its cap.
- **Throttles** (``throttle``): the monitor's action against a suspicious key,
  a stricter rate for a while, stored where every worker sees it.

Backends: one worker keeps everything in memory; several share one Redis
(``VEIL_REDIS_URL``). Redis is not the durable record of answered records: the
trail spool's flush adds them to ``ServeUsageRow`` with their trail entries. A
counter missing from Redis (a new key, a restarted or flushed Redis) is seeded
from that row before its first use, so the counter can run ahead of the row
(records spent by requests not yet flushed, or that failed after the spend)
but never behind it: the conservative side. The one gap: records answered in
the last flush interval (~50 ms) before Redis lost its data are not in the row
yet, and are spent again.

When Redis cannot be reached every method raises :class:`UnavailableError`
(HTTP 503) after at most about a second (0.5 s socket timeouts, one retry):
the gateway refuses rather than serve without limits. Redis should run with
``maxmemory-policy noeviction`` (or a ``volatile-*`` policy): budget counters
have no expiry and must not be evicted.

Moving windows use each worker's clock (``limits`` timestamps entries on the
client), so workers on several hosts need synchronised clocks.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol, cast

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import select

from veil.errors import (
    BudgetExceededError,
    InvalidInputError,
    RateLimitedError,
    UnavailableError,
)
from veil.serve._config import REDIS_ENV
from veil.store.tables import ServeUsageRow
from veil.workspace import redact_url

if TYPE_CHECKING:
    from veil.store import Store

__all__ = ["Limits", "check_rate"]

#: Seconds a Redis connect or command may take before the limit check fails with a 503.
REDIS_TIMEOUT = 0.5

# KEYS[1]: the counter. ARGV: records asked for, cap (-1: none), seed ('': not read yet).
# Returns {used after the call, 1 if spent else 0}; {-1, 0} asks the caller for the seed.
_SPEND_LUA = """
local used = redis.call('GET', KEYS[1])
if not used then
  if ARGV[3] == '' then return {-1, 0} end
  redis.call('SET', KEYS[1], ARGV[3])
  used = ARGV[3]
end
used = tonumber(used)
local n = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
if cap >= 0 and used + n > cap then return {used, 0} end
return {redis.call('INCRBY', KEYS[1], n), 1}
"""

# KEYS[1]: the counter. ARGV[1]: records to give back. Never below zero, never creates it.
_REFUND_LUA = """
local used = redis.call('GET', KEYS[1])
if not used then return -1 end
local left = math.max(tonumber(used) - tonumber(ARGV[1]), 0)
redis.call('SET', KEYS[1], left)
return left
"""


@functools.lru_cache(maxsize=256)
def _parse_rate(rate: str) -> RateLimitItem:
    try:
        items = parse_many(rate) if isinstance(rate, str) else []
    except ValueError:
        items = []
    # "20/second;600/minute" is two limits (the caller means one); "0/second" refuses everything.
    if len(items) != 1 or items[0].amount < 1:
        raise InvalidInputError(
            f"{rate!r} is not a rate limit",
            expected="one count >= 1 per period, such as '20/second', '100 per minute' or "
            "'5/2 seconds'",
            got=repr(rate),
            fix="write one rate as N/second, N/minute, N/hour or N/day in the serving policy",
        )
    return items[0]


def check_rate(rate: str) -> str:
    """``rate`` unchanged if the `limits` library reads it (``"20/second"``), else an error.

    Raises:
        InvalidInputError: ``rate`` is not a rate such as ``"20/second"``.
    """
    _parse_rate(rate)
    return rate


def _per_second(rate: str) -> float:
    item = _parse_rate(rate)
    return item.amount / item.get_expiry()


class _Backend(Protocol):
    """Where one :class:`Limits` keeps its windows and counters."""

    name: str

    def acquire(self, item: RateLimitItem, bucket: str) -> float | None:
        """Take one request from ``bucket``'s window: None, or seconds until one is free."""

    def spend(
        self, counter: str, n: int, cap: int | None, seed: Callable[[], int]
    ) -> tuple[int, bool]:
        """(records used after the call, whether ``n`` were added)."""

    def refund(self, counter: str, n: int) -> None: ...

    def set_throttle(self, key_id: str, rate: str, seconds: float) -> None: ...

    def get_throttle(self, key_id: str) -> str | None: ...

    def ping(self) -> None: ...

    def close(self) -> None: ...


def _retry_after(reset: float) -> float:
    """Seconds until ``reset`` (a window's end, epoch seconds), never zero: a refusal means wait."""
    return max(round(reset - time.time(), 3), 0.001)


class _MemoryBackend:
    """One process's memory: the windows of `limits`' MemoryStorage, counters under a lock."""

    name = "memory"

    def __init__(self) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._lock = threading.Lock()
        self._counters: dict[str, int] = {}
        self._throttles: dict[str, tuple[str, float]] = {}

    def acquire(self, item: RateLimitItem, bucket: str) -> float | None:
        if self._limiter.hit(item, bucket):
            return None
        return _retry_after(self._limiter.get_window_stats(item, bucket).reset_time)

    def spend(
        self, counter: str, n: int, cap: int | None, seed: Callable[[], int]
    ) -> tuple[int, bool]:
        with self._lock:
            known = counter in self._counters
        if not known:
            seeded = seed()  # a database read: outside the lock
            with self._lock:
                self._counters.setdefault(counter, seeded)
        with self._lock:
            used = self._counters[counter]
            if cap is not None and used + n > cap:
                return used, False
            self._counters[counter] = used + n
            return used + n, True

    def seeded(self, counter: str) -> bool:
        with self._lock:
            return counter in self._counters

    def refund(self, counter: str, n: int) -> None:
        with self._lock:
            if counter in self._counters:
                self._counters[counter] = max(self._counters[counter] - n, 0)

    def set_throttle(self, key_id: str, rate: str, seconds: float) -> None:
        with self._lock:
            self._throttles[key_id] = (rate, time.monotonic() + seconds)

    def get_throttle(self, key_id: str) -> str | None:
        with self._lock:
            entry = self._throttles.get(key_id)
            if entry is None:
                return None
            if entry[1] <= time.monotonic():
                del self._throttles[key_id]
                return None
            return entry[0]

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None


class _RedisBackend:
    """One Redis shared by every worker; each call fails with UnavailableError when it is down."""

    name = "redis"

    def __init__(self, url: str, prefix: str) -> None:
        import redis  # noqa: PLC0415 - only the Redis backend needs redis
        from redis.backoff import NoBackoff  # noqa: PLC0415
        from redis.retry import Retry  # noqa: PLC0415

        self._url = url
        self._prefix = prefix
        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        try:
            # One immediate retry reconnects a pooled connection that a Redis restart closed;
            # redis-py's default (three retries, exponential backoff) would hold a request for
            # seconds when Redis is down.
            self._client = redis.Redis.from_url(
                url,
                socket_timeout=REDIS_TIMEOUT,
                socket_connect_timeout=REDIS_TIMEOUT,
                retry=Retry(NoBackoff(), 1),
            )
        except ValueError as exc:
            raise InvalidInputError(
                "the Redis URL for the service's limits is not one redis-py reads",
                expected=f"{REDIS_ENV} like redis://127.0.0.1:6379/0 (or rediss://, unix://)",
                got=f"{redact_url(url)} ({exc})",
                fix=f"set {REDIS_ENV} to the Redis server's URL",
            ) from None
        storage = RedisStorage(
            url, connection_pool=self._client.connection_pool, key_prefix=f"{prefix}:rate"
        )
        self._limiter = MovingWindowRateLimiter(storage)
        self._spend = self._client.register_script(_SPEND_LUA.encode())
        self._refund = self._client.register_script(_REFUND_LUA.encode())

    @contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        try:
            yield
        except self._errors as exc:
            raise UnavailableError(
                f"the Redis server that holds the service's limits did not answer ({doing})",
                expected=f"a Redis server answering at {REDIS_ENV} within {REDIS_TIMEOUT} s",
                got=f"{type(exc).__name__} from {redact_url(self._url)}: {exc}",
                fix=f"start Redis or point {REDIS_ENV} at a running one; the service refuses "
                "requests rather than serve them without rate limits and count budgets",
                details={"backend": "redis", "url": redact_url(self._url)},
            ) from None

    def _key(self, kind: str, name: str) -> str:
        return f"{self._prefix}:{kind}:{name}"

    def acquire(self, item: RateLimitItem, bucket: str) -> float | None:
        with self._guard("rate limit"):
            if self._limiter.hit(item, bucket):
                return None
            return _retry_after(self._limiter.get_window_stats(item, bucket).reset_time)

    def spend(
        self, counter: str, n: int, cap: int | None, seed: Callable[[], int]
    ) -> tuple[int, bool]:
        key = self._key("budget", counter)
        limit = -1 if cap is None else cap
        with self._guard("count budget"):
            used, spent = self._spend(keys=[key], args=[n, limit, ""])
        if used < 0:
            seeded = seed()  # a database read, between two calls: SET inside the script is NX
            with self._guard("count budget"):
                used, spent = self._spend(keys=[key], args=[n, limit, seeded])
        return int(used), bool(spent)

    def refund(self, counter: str, n: int) -> None:
        with self._guard("count budget refund"):
            self._refund(keys=[self._key("budget", counter)], args=[n])

    def set_throttle(self, key_id: str, rate: str, seconds: float) -> None:
        with self._guard("throttle"):
            self._client.set(self._key("throttle", key_id), rate, px=max(int(seconds * 1000), 1))

    def get_throttle(self, key_id: str) -> str | None:
        with self._guard("throttle"):
            # redis-py types a reply as Awaitable | Any for its async client; this one is sync.
            value = cast("bytes | None", self._client.get(self._key("throttle", key_id)))
        return None if value is None else value.decode()

    def ping(self) -> None:
        with self._guard("ping"):
            self._client.ping()

    def close(self) -> None:
        self._client.close()


class Limits:
    """The gateway's rate limits, per-key count budgets and throttles.

    Use :meth:`open`. Every method is safe to call from many threads; with the
    Redis backend, from many processes.

    Args:
        backend: Where windows and counters live (see :meth:`open`).
        store: The workspace database, read to seed a count budget's counter.
        ip_rate: Requests per client address allowed before authentication.
    """

    def __init__(self, backend: _Backend, store: Store, *, ip_rate: str = "200/second") -> None:
        self._backend = backend
        self._store = store
        self.ip_rate = check_rate(ip_rate)

    @classmethod
    def open(
        cls,
        redis_url: str | None,
        store: Store,
        *,
        ip_rate: str = "200/second",
        prefix: str = "veil",
    ) -> Limits:
        """Limits in this process's memory (``redis_url`` None: one worker) or in Redis.

        Args:
            redis_url: ``VEIL_REDIS_URL``; None keeps limits in memory.
            store: The workspace database (``ServeUsageRow`` seeds count budgets).
            ip_rate: Requests per client address allowed before authentication.
            prefix: First part of every Redis key (one Redis can hold several services).

        Raises:
            InvalidInputError: ``redis_url`` or ``ip_rate`` cannot be read.
            UnavailableError: Redis does not answer.
        """
        check_rate(ip_rate)
        if redis_url is None:
            return cls(_MemoryBackend(), store, ip_rate=ip_rate)
        backend = _RedisBackend(redis_url, prefix)
        try:
            backend.ping()
        except UnavailableError:
            backend.close()
            raise
        return cls(backend, store, ip_rate=ip_rate)

    @property
    def backend(self) -> str:
        """``"memory"`` or ``"redis"``."""
        return self._backend.name

    def in_memory(self, key_id: str, model: str) -> bool:
        """Whether :meth:`hit` and :meth:`spend` for ``key_id`` on ``model`` touch nothing but
        this process's memory: limits kept in memory and the key's counter already read
        from the database. The gateway then answers on its event loop, without a thread."""
        backend = self._backend
        return isinstance(backend, _MemoryBackend) and backend.seeded(_counter(key_id, model))

    # ------------------------------------------------------------------ rates
    def hit(self, bucket: str, rate: str) -> None:
        """Count one request against ``bucket``'s moving window of ``rate`` (``"20/second"``).

        Raises:
            RateLimitedError: The window is full; ``details["retry_after"]`` is the seconds
                until its oldest request leaves it.
            InvalidInputError: ``rate`` cannot be read.
            UnavailableError: Redis does not answer.
        """
        item = _parse_rate(rate)
        wait = self._backend.acquire(item, bucket)
        if wait is not None:
            raise RateLimitedError(
                f"too many requests for {bucket}: at most {item} are allowed",
                expected=f"at most {item}",
                got=f"request {item.amount + 1} within one window",
                fix=f"wait {wait:.3f} s (the Retry-After header) and pace requests to the "
                "rate; ask the operator for a higher rate in the serving policy if you need it",
                details={"retry_after": wait, "bucket": bucket, "rate": rate},
            )

    def hit_ip(self, ip: str) -> None:
        """Count one request from client address ``ip`` before its key is checked.

        The gateway calls this before any database work, so that a flood of bad
        keys from one address is refused cheaply and cannot grow the trail without bound.

        Raises:
            RateLimitedError: The address sent more than :attr:`ip_rate`.
            UnavailableError: Redis does not answer.
        """
        self.hit(f"ip:{ip}", self.ip_rate)

    # ------------------------------------------------------------------ budgets
    def spend(self, key_id: str, model: str, n: int, cap: int | None) -> int | None:
        """Take ``n`` records from ``key_id``'s count budget on ``model``, atomically.

        Args:
            key_id: The service key's id.
            model: The served model's name.
            n: Records this request asks ``model`` to answer.
            cap: Records the key may have answered in all (the policy's
                ``queries_per_key``); None: no cap (records are still counted).

        Returns:
            Records left after this request, or None without a cap.

        Raises:
            BudgetExceededError: ``used + n > cap``; nothing is taken.
            InvalidInputError: ``n`` or ``cap`` is negative.
            UnavailableError: Redis does not answer.
            StoreError: The database cannot be read to seed a new counter.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidInputError(
                "the records to take from a count budget must be a whole number >= 0",
                expected="an int >= 0",
                got=repr(n),
                fix="pass the number of records in the request",
            )
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 0):
            raise InvalidInputError(
                "a count budget's cap must be a whole number >= 0, or None for no cap",
                expected="an int >= 0 or None",
                got=repr(cap),
                fix="set queries_per_key in the serving policy to a whole number of records",
            )
        used, spent = self._backend.spend(
            _counter(key_id, model), n, cap, lambda: self._answered(key_id, model)
        )
        if cap is None:
            return None
        if not spent:
            left = max(cap - used, 0)
            raise BudgetExceededError(
                f"service key {key_id} has had {used} of its {cap} records answered by "
                f"model {model!r}; this request asks for {n} more",
                expected=f"at most {left} records",
                got=f"{n} records",
                fix=(
                    f"send at most {left} records"
                    if left
                    else "ask the operator to raise queries_per_key for this model"
                )
                + " (the count budget bounds how much of the model one key can extract)",
                details={
                    "key_id": key_id,
                    "model": model,
                    "used": used,
                    "cap": cap,
                    "requested": n,
                    "left": left,
                },
            )
        return cap - used

    def used(self, key_id: str, model: str) -> int:
        """Records ``key_id`` has had answered (or has taken) from ``model``; takes nothing.

        Raises:
            UnavailableError: Redis does not answer.
            StoreError: The database cannot be read to seed a new counter.
        """
        counter = _counter(key_id, model)
        return self._backend.spend(counter, 0, None, lambda: self._answered(key_id, model))[0]

    def refund(self, key_id: str, model: str, n: int) -> None:
        """Give back ``n`` records that :meth:`spend` took but the model never answered.

        Call it only when the request fails before any answer leaves (the
        counter must never fall below the records answered).
        """
        if n > 0:
            self._backend.refund(_counter(key_id, model), n)

    def _answered(self, key_id: str, model: str) -> int:
        with self._store.session() as session:
            answered = session.scalar(
                select(ServeUsageRow.answered).where(
                    ServeUsageRow.key_id == key_id, ServeUsageRow.model == model
                )
            )
        return int(answered or 0)

    # ------------------------------------------------------------------ throttles
    def throttle(self, key_id: str, rate: str, seconds: float) -> None:
        """Hold ``key_id`` to ``rate`` for ``seconds`` (the monitor's "throttle" action).

        Every worker sees it (Redis key with a TTL); a later call replaces it.

        Raises:
            InvalidInputError: ``rate`` cannot be read or ``seconds`` is not > 0.
            UnavailableError: Redis does not answer.
        """
        check_rate(rate)
        if isinstance(seconds, bool) or not (
            isinstance(seconds, int | float) and math.isfinite(seconds) and seconds > 0
        ):
            raise InvalidInputError(
                "a throttle lasts a positive, finite number of seconds",
                expected="seconds > 0",
                got=repr(seconds),
                fix="pass how long the key should be throttled, such as 600",
            )
        self._backend.set_throttle(key_id, rate, float(seconds))

    def throttled_rate(self, key_id: str) -> str | None:
        """The rate ``key_id`` is throttled to now, or None."""
        return self._backend.get_throttle(key_id)

    def effective_rate(self, key_id: str, rate: str) -> str:
        """The rate to apply to ``key_id``: its throttle while one lasts and is stricter, else ``rate``."""
        throttled = self.throttled_rate(key_id)
        if throttled is None or _per_second(throttled) >= _per_second(rate):
            return rate
        return throttled

    # ------------------------------------------------------------------ health
    def ping(self) -> None:
        """Nothing if the backend answers (for ``/readyz``).

        Raises:
            UnavailableError: Redis does not answer.
        """
        self._backend.ping()

    def close(self) -> None:
        """Release the Redis connections (the in-memory backend holds nothing)."""
        self._backend.close()


def _counter(key_id: str, model: str) -> str:
    # Key ids are hex (access._keys), so the first colon ends the id: no two pairs collide.
    return f"{key_id}:{model}"
