"""The cluster's shared table in Redis: live worker reports and call owners.

Nothing here elects or agrees on anything: every fact is a Redis key with an
expiry, rewritten by its owner while it holds, so a worker that dies simply
ages out. Redis may be down, stalled or restarted empty at any time, so every
operation is bounded by `timeout_s`, failures become `RegistryUnavailable`,
and the heartbeat (`run`) writes everything it owns again once Redis answers.

Keys (after the prefix, "rtc-agent:" by default):

    worker:<worker id>  string, the JSON of `WorkerLoad.to_json()`, PX ttl_s
    workers             sorted set: worker id scored by the time (publisher's
                        clock) its report expires; an index, so listing needs no
                        SCAN. Liveness is the report key's own expiry (Redis's
                        clock); members are pruned one ttl_s after their score
                        (slack for clock skew between nodes); the set itself
                        expires 2 × ttl_s after the last publish.
    call:<call id>      string, the owning worker's id, PX call_ttl_s, rewritten
                        every call_refresh_s by the owner's heartbeat

Everything read back is untrusted: an entry that is not a valid report (not
UTF-8, not JSON, wrong types, too large, a wrong Redis type) is skipped with a
debug log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any, Literal, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from .placement import WorkerLoad

log = logging.getLogger(__name__)

State = Literal["connecting", "ok", "unreachable"]
T = TypeVar("T")

REDACTED = "[redacted]"
MAX_ID_BYTES = 256  # worker and call ids longer than this are not ids
MAX_REPORT_BYTES = 16 * 1024  # a report is ~250 bytes; larger values are garbage
MAX_WORKERS = 4096  # listed at most; a cluster is far smaller
CHUNK = 500  # owner keys per pipeline when re-recording calls
MAX_CONNECTIONS = 16  # one registry's Redis connections (callers wait up to timeout_s)

# What a failed exchange with Redis can raise: redis-py's errors (its
# ConnectionError and TimeoutError included), socket errors, asyncio.timeout.
_FAILURES = (RedisError, OSError, TimeoutError, EOFError)


class RegistryUnavailable(Exception):
    """Redis could not be reached, or did not answer within timeout_s."""


class RedisRegistry:
    """One worker's (or one node's) handle on the cluster registry in Redis.

    `state` is "connecting" until the first exchange, then "ok" or
    "unreachable". While unreachable, calls raise `RegistryUnavailable`
    at once instead of each waiting out a timeout; one real attempt is let
    through per interval_s (and `run` tries every interval_s), so recovery is
    noticed without a flood of doomed connects.
    """

    def __init__(self, url: str, *, prefix: str = "rtc-agent:", ttl_s: float = 5.0,
                 interval_s: float = 1.0, timeout_s: float = 0.5,
                 call_ttl_s: float = 60.0, call_refresh_s: float = 10.0) -> None:
        if not (0 < timeout_s and 0 < interval_s < ttl_s):
            raise ValueError("need 0 < timeout_s and 0 < interval_s < ttl_s")
        if not 0 < call_refresh_s < call_ttl_s:
            raise ValueError("need 0 < call_refresh_s < call_ttl_s")
        self.url = redact_url(url)
        self._secret = _password_of(url)
        self._prefix = prefix
        self._index = f"{prefix}workers"
        self._ttl_s = ttl_s
        self.ttl_s = ttl_s  # how long a report lives: how long a reader may trust one
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._call_ttl_s = call_ttl_s
        self._call_refresh_s = call_refresh_s
        # One pool per registry; no retries inside redis-py (a retry would
        # double the time a caller can wait), connects and reads bounded.
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=timeout_s,
            socket_connect_timeout=timeout_s, socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0), decode_responses=False)
        self._redis = redis.asyncio.Redis.from_pool(pool)
        self.state: State = "connecting"
        self.last_error: str | None = None
        self.since = time.time()
        self._outages = 0  # bumped on each fall into "unreachable"; tells `run` to resync
        self._last_attempt = -math.inf  # loop time of the last exchange tried
        self._closed = False

    def __repr__(self) -> str:
        return f"RedisRegistry({self.url!r}, prefix={self._prefix!r}, state={self.state!r})"

    # --- worker reports ---------------------------------------------------

    async def publish(self, load: WorkerLoad) -> None:
        """Write this worker's report (expiring in ttl_s) and index it."""
        await self._publish(load, force=False)

    async def _publish(self, load: WorkerLoad, *, force: bool) -> bool:
        """Publish; whether the report key still existed (False: Redis lost it, or we lapsed)."""
        _check_id(load.id)
        key = self._worker_key(load.id)
        data = json.dumps(load.to_json(), separators=(",", ":"))
        ttl_ms = max(1, round(self._ttl_s * 1000))

        async def op(r: redis.asyncio.Redis) -> bool:
            async with r.pipeline(transaction=False) as p:
                p.exists(key)
                p.set(key, data, px=ttl_ms)
                p.zadd(self._index, {load.id: time.time() + self._ttl_s})
                p.pexpire(self._index, 2 * ttl_ms)
                existed, _, added, _ = await p.execute(raise_on_error=False)
            if _wrong_type(added):
                # Something else wrote our index key; it is ours to rebuild.
                log.warning("cluster registry: %s held a non-index value; replaced it",
                            self._index)
                async with r.pipeline(transaction=False) as p:
                    p.delete(self._index)
                    p.zadd(self._index, {load.id: time.time() + self._ttl_s})
                    p.pexpire(self._index, 2 * ttl_ms)
                    await p.execute()
            else:
                _raise_errors([existed, added])
            return bool(existed)

        return await self._call("publish", op, force=force)

    async def withdraw(self, worker_id: str) -> None:
        """Remove a report at once (exit, end of a drain). Best effort: never raises.

        Cancel `run` first, or its next heartbeat publishes the report again.
        """
        async def op(r: redis.asyncio.Redis) -> None:
            async with r.pipeline(transaction=False) as p:
                p.delete(self._worker_key(worker_id))
                p.zrem(self._index, worker_id)
                await p.execute(raise_on_error=False)

        try:
            await self._call("withdraw", op)
        except RegistryUnavailable as exc:
            log.debug("cluster registry: withdraw of %s skipped: %s", worker_id, exc)

    async def workers(self) -> list[WorkerLoad]:
        """The live reports, by id; invalid entries are skipped, never raised."""
        async def op(r: redis.asyncio.Redis) -> list[WorkerLoad]:
            floor = time.time() - self._ttl_s
            async with r.pipeline(transaction=False) as p:
                p.zremrangebyscore(self._index, "-inf", f"({floor!r}")
                p.zrangebyscore(self._index, f"({floor!r}", "+inf", start=0, num=MAX_WORKERS)
                pruned, members = await p.execute(raise_on_error=False)
            if _wrong_type(members):
                log.debug("cluster registry: %s is not a sorted set; no workers", self._index)
                return []
            _raise_errors([pruned, members])
            ids = [i for i in (_decode_id(m) for m in members) if i is not None]
            if not ids:
                return []
            async with r.pipeline(transaction=False) as p:
                for worker_id in ids:
                    p.getrange(self._worker_key(worker_id), 0, MAX_REPORT_BYTES)
                values = await p.execute(raise_on_error=False)
            loads = [_parse_report(i, v) for i, v in zip(ids, values, strict=True)]
            return sorted((w for w in loads if w is not None), key=lambda w: w.id)

        return await self._call("workers", op)

    # --- call owners --------------------------------------------------------

    async def record_call(self, call_id: str, worker_id: str) -> None:
        """Record which worker holds a call (expiring in call_ttl_s unless `run` renews it)."""
        await self._record([call_id], worker_id, force=False)

    async def forget_call(self, call_id: str) -> None:
        """Drop a call's owner at once (the call ended)."""
        _check_id(call_id)
        key = self._call_key(call_id)

        async def op(r: redis.asyncio.Redis) -> None:
            await r.delete(key)

        await self._call("forget_call", op)

    async def owner(self, call_id: str) -> str | None:
        """The id of the worker holding a call, or None (unknown, ended, or garbage)."""
        if not call_id or len(call_id.encode()) > MAX_ID_BYTES:
            return None
        key = self._call_key(call_id)

        async def op(r: redis.asyncio.Redis) -> str | None:
            async with r.pipeline(transaction=False) as p:
                p.getrange(key, 0, MAX_ID_BYTES)
                (value,) = await p.execute(raise_on_error=False)
            if _wrong_type(value):
                log.debug("cluster registry: %s is not a string; no owner", key)
                return None
            _raise_errors([value])
            return _decode_id(value) if value else None

        return await self._call("owner", op)

    async def _record(self, call_ids: Iterable[str], worker_id: str, *, force: bool) -> None:
        """Write owner keys, pipelined in chunks (each chunk bounded by timeout_s)."""
        _check_id(worker_id)
        ids = list(call_ids)
        for call_id in ids:
            _check_id(call_id)
        ttl_ms = max(1, round(self._call_ttl_s * 1000))
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]

            async def op(r: redis.asyncio.Redis, chunk: list[str] = chunk) -> None:
                async with r.pipeline(transaction=False) as p:
                    for call_id in chunk:
                        p.set(self._call_key(call_id), worker_id, px=ttl_ms)
                    await p.execute()

            await self._call("record_call", op, force=force)

    # --- the heartbeat ------------------------------------------------------

    async def run(self, report: Callable[[], WorkerLoad],
                  calls: Callable[[], Collection[str]]) -> None:
        """Heartbeat until cancelled: publish `report()` every interval_s, keep owners alive.

        The owner keys of `calls()` are rewritten every call_refresh_s, and at
        once whenever Redis may have lost them: the first beat, the first beat
        after an outage, or a beat that finds this worker's report gone (Redis
        restarted between two beats). Failures are logged once per outage by
        the state change, and the loop keeps trying. An exception from
        `report` or `calls` (a bug in the worker) ends the loop.
        """
        loop = asyncio.get_running_loop()
        synced_outages = -1  # the outage count when owners were last all written
        next_refresh = -math.inf
        while True:
            started = loop.time()
            try:
                load = report()
                existed = await self._publish(load, force=True)
                outages = self._outages
                if not existed or outages != synced_outages or started >= next_refresh:
                    await self._record(_valid_ids(calls()), load.id, force=True)
                    synced_outages, next_refresh = outages, started + self._call_refresh_s
            except RegistryUnavailable:
                pass  # `_call` logged the outage (once) and set the state
            await asyncio.sleep(max(0.0, self._interval_s - (loop.time() - started)))

    async def close(self) -> None:
        """Close the connections; later calls raise `RegistryUnavailable`."""
        self._closed = True
        await self._redis.aclose()

    # --- plumbing -----------------------------------------------------------

    def _worker_key(self, worker_id: str) -> str:
        return f"{self._prefix}worker:{worker_id}"

    def _call_key(self, call_id: str) -> str:
        return f"{self._prefix}call:{call_id}"

    async def _call(self, what: str, op: Callable[[redis.asyncio.Redis], Awaitable[T]], *,
                    force: bool = False) -> T:
        """Run one exchange with Redis, bounded by timeout_s, and track the state.

        `force` skips the fast failure while unreachable (the heartbeat's probe).
        """
        if self._closed:
            raise RegistryUnavailable("the registry is closed")
        now = asyncio.get_running_loop().time()
        known_down = self.state == "unreachable" and now - self._last_attempt < self._interval_s
        if known_down and not force:
            raise RegistryUnavailable(f"Redis at {self.url} is unreachable: {self.last_error}")
        self._last_attempt = now
        try:
            async with asyncio.timeout(self._timeout_s):
                try:
                    result = await op(self._redis)
                except (RedisConnectionError, ConnectionError, EOFError):
                    # After Redis restarted, every pooled connection is dead and the
                    # first use of each fails: drop the idle ones and try once more,
                    # within the same time bound.
                    await self._redis.connection_pool.disconnect(inuse_connections=False)
                    result = await op(self._redis)
        except _FAILURES as exc:
            reason = self._redact(_describe(exc))
            self._failed(reason)
            raise RegistryUnavailable(f"{what}: Redis at {self.url}: {reason}") from None
        self._succeeded()
        return result

    def _failed(self, reason: str) -> None:
        self.last_error = reason
        if self.state == "unreachable":
            log.debug("cluster registry: Redis at %s still unreachable: %s", self.url, reason)
            return
        self.state, self.since = "unreachable", time.time()
        self._outages += 1
        log.warning("cluster registry: Redis at %s unreachable (%s); retrying every %.1f s",
                    self.url, reason, self._interval_s)

    def _succeeded(self) -> None:
        if self.state == "ok":
            return
        was, down_s = self.state, time.time() - self.since
        self.state, self.since, self.last_error = "ok", time.time(), None
        if was == "unreachable":
            log.info("cluster registry: Redis at %s reachable again after %.1f s",
                     self.url, down_s)
        else:
            log.info("cluster registry: connected to Redis at %s", self.url)

    def _redact(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, REDACTED)
        return _redact_urls(text)


def redact_url(url: str) -> str:
    """The URL with any password (userinfo or ?password=) replaced, for logs and reprs."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        if parts.password is not None:
            user = parts.username or ""
            parts = parts._replace(netloc=f"{user}:{REDACTED}@{host}")
        return _redact_query(urlunsplit(parts))
    except ValueError:
        return "<unparsable Redis URL>"


def _password_of(url: str) -> str | None:
    """The password in a URL, to scrub it from error text (only if long enough to be safe)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password and len(password) >= 3 else None


_URL_PASSWORD = re.compile(r"(\w+://[^:/@\s]*:)[^@\s]*@")
_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&\s]*")


def _redact_query(text: str) -> str:
    return _QUERY_PASSWORD.sub(lambda m: m.group(1) + REDACTED, text)


def _redact_urls(text: str) -> str:
    return _redact_query(_URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + "@", text))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}"[:300]


def _check_id(value: str) -> None:
    if not value or len(value.encode()) > MAX_ID_BYTES:
        raise ValueError(f"an id must be 1 to {MAX_ID_BYTES} bytes")


def _valid_ids(ids: Iterable[str]) -> list[str]:
    """The ids that can be keys; one bad id must not stop the heartbeat."""
    valid = [i for i in ids if i and len(i.encode()) <= MAX_ID_BYTES]
    if isinstance(ids, Collection) and len(valid) != len(ids):
        log.debug("cluster registry: %d call ids too long to record", len(ids) - len(valid))
    return valid


def _wrong_type(result: Any) -> bool:
    return isinstance(result, ResponseError) and str(result).startswith("WRONGTYPE")


def _raise_errors(results: Iterable[Any]) -> None:
    """Pipeline replies run with raise_on_error=False: raise the first real error."""
    for result in results:
        if isinstance(result, Exception):
            raise result


def _decode_id(raw: Any) -> str | None:
    if not isinstance(raw, bytes) or not 0 < len(raw) <= MAX_ID_BYTES:
        log.debug("cluster registry: skipped an id that is not one: %r", raw)
        return None
    try:
        value = raw.decode()
    except UnicodeDecodeError:
        log.debug("cluster registry: skipped an id that is not UTF-8: %r", raw)
        return None
    if not value.isprintable():
        log.debug("cluster registry: skipped an id that is not printable: %r", raw)
        return None
    return value


def _parse_report(worker_id: str, raw: Any) -> WorkerLoad | None:
    """A report read back from Redis, or None (missing, expired, or garbage)."""
    if _wrong_type(raw):
        log.debug("cluster registry: report of %s is not a string; skipped", worker_id)
        return None
    _raise_errors([raw])
    if not raw:
        return None  # expired since the index was read, or withdrawn
    if not isinstance(raw, bytes) or len(raw) > MAX_REPORT_BYTES:
        log.debug("cluster registry: report of %s is too large; skipped", worker_id)
        return None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        load = WorkerLoad.from_json(data)
    except (ValueError, RecursionError) as exc:
        log.debug("cluster registry: report of %s is invalid (%s); skipped",
                  worker_id, str(exc)[:100])
        return None
    if load.id != worker_id:
        log.debug("cluster registry: report under %s names %s; skipped", worker_id, load.id)
        return None
    return load
