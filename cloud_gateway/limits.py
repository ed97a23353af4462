"""Per-device rate limits and quotas: requests per minute and tokens per (UTC) day.

Counting lives behind `UsageStore` (SQLite for one gateway, Redis for replicas); the policy
(what is over the limit and for how long) lives here. Windows are fixed: a minute bucket for
requests and a UTC-day bucket for tokens, so `Retry-After` is the time to the next bucket.

A finished request is charged even when the store cannot take the charge at that moment
(Redis unreachable): the charge is kept here, summed per device and day, and applied to the
day it was incurred at the next store call that works (before the next admission or charge,
every `usage_flush_s` from the app, and once more at shutdown). A charge is sent under an
id of its own, first attempt included, and a charge that was sent is re-sent under that id,
which the store applies at most once (Redis: if re-sent within an hour of the first attempt),
so a reply lost with the connection does not charge it twice. With a `ChargeJournal` the
kept charges are also on disk (written at each upkeep round and at shutdown): a gateway that
stops, or dies, with charges still kept leaves them to the next one started on the same
state folder.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from typing import Protocol

from cloud_gateway.charge_journal import ChargeJournal, Kept
from cloud_gateway.errors import RateLimited, StoreUnavailable
from cloud_gateway.logs import LOGGER_NAME

MINUTE = 60
DAY = 86_400
MAX_UNCHARGED = 100_000  # (device, day) charges kept while the store is down; more are dropped

log = logging.getLogger(LOGGER_NAME)


class UsageStore(Protocol):
    """Counts requests and tokens per device. Implementations: SQLite, Redis."""

    async def count_request(self, device: str, minute: int, day: int) -> tuple[int, int]:
        """Count one request; return (requests in this minute including it, tokens today)."""
        ...

    async def add_tokens(
        self, device: str, day: int, tokens: int, charge_id: str | None = None,
        *, first_attempt: bool = False,
    ) -> None:
        """Add the tokens a finished request used to `day`; a `charge_id` already applied
        is not applied again (a charge re-sent after a failure whose reply may have been
        lost). A store that raises `StoreUnavailable` must honour ids on a `first_attempt`
        too, for as long as a failed charge may wait to be re-sent."""
        ...

    async def close(self) -> None: ...


class RateLimiter:
    """Raises `RateLimited` (429 + Retry-After) when a device is over a limit; 0 = unlimited."""

    def __init__(
        self,
        store: UsageStore,
        requests_per_minute: int,
        tokens_per_day: int,
        *,
        max_uncharged: int = MAX_UNCHARGED,
        journal: ChargeJournal | None = None,
    ) -> None:
        self.store = store
        self.requests_per_minute = requests_per_minute
        self.tokens_per_day = tokens_per_day
        self._max_uncharged = max_uncharged
        # Charges the store refused: never sent (summed per device and day), and sent once
        # or more under an id (kept as they were sent, since the store may hold them already).
        self._unsent: dict[tuple[str, int], int] = {}
        self._sent: dict[str, Kept] = {}
        self._uncharged = 0  # their tokens
        self._cause: str | None = None  # why the store last refused a charge, for the log
        self._applying = asyncio.Lock()
        self._journal = journal
        self._dirty = False  # kept charges changed since the journal was written
        if journal is not None:  # charges left by gateways gone: ours now
            claimed = journal.claim()
            self._sent.update(claimed)
            self._uncharged += sum(c.tokens for c in claimed.values())
            self._dirty = bool(claimed)
            self.persist()

    @property
    def uncharged_tokens(self) -> int:
        """Tokens used but not yet charged to the store (it was unavailable)."""
        return self._uncharged

    async def admit(self, device: str, now: float) -> None:
        """Count this request against the device's limits, or raise `RateLimited`."""
        minute, day = int(now // MINUTE), int(now // DAY)
        await self.apply_uncharged()  # first, so that the quota below counts them
        requests, tokens = await self.store.count_request(device, minute, day)
        if self.tokens_per_day and tokens >= self.tokens_per_day:
            raise RateLimited(
                f"this device used its {self.tokens_per_day} tokens for today",
                retry_after_s=math.ceil((day + 1) * DAY - now),
                limit="tokens_per_day",
            )
        if self.requests_per_minute and requests > self.requests_per_minute:
            raise RateLimited(
                f"this device is over {self.requests_per_minute} requests per minute",
                retry_after_s=math.ceil((minute + 1) * MINUTE - now),
                limit="requests_per_minute",
            )

    async def record(self, device: str, tokens: int, now: float) -> bool:
        """Charge the tokens of a finished request to the quota of `now`'s day. True if the
        store took the charge; False if it is kept to be applied later (store unavailable)."""
        if tokens <= 0:
            return True
        day = int(now // DAY)
        if await self.apply_uncharged():
            # Sent under an id: if the reply is lost with the connection, the store may
            # have added it, and the charge is re-sent under the same id (added once).
            charge_id = uuid.uuid4().hex
            try:
                await self.store.add_tokens(
                    device, day, tokens, charge_id=charge_id, first_attempt=True
                )
                return True
            except StoreUnavailable as exc:
                self._cause = exc.cause
                self._keep(device, day, tokens, charge_id)
                return False
        self._keep(device, day, tokens)
        return False

    def _keep(self, device: str, day: int, tokens: int, charge_id: str | None = None) -> None:
        """Keep a charge the store did not take: summed with the device's day if it was never
        sent, as it was sent (under `charge_id`) if it was."""
        key = (device, day)
        new_entry = charge_id is not None or key not in self._unsent
        if new_entry and len(self._unsent) + len(self._sent) >= self._max_uncharged:
            log.error(
                "usage dropped",
                extra={"fields": {"device": device, "day": _date(day), "tokens": tokens,
                                  "reason": f"{self._max_uncharged} charges already kept"}},
            )
            return
        if charge_id is None:
            self._unsent[key] = self._unsent.get(key, 0) + tokens
        else:
            self._sent[charge_id] = Kept(device, day, tokens)
        self._uncharged += tokens
        self._dirty = True
        log.warning(
            "usage charge deferred",
            extra={"fields": {"device": device, "day": _date(day), "tokens": tokens,
                              "uncharged_tokens": self.uncharged_tokens,
                              "cause": self._cause}},
        )

    async def apply_uncharged(self) -> bool:
        """Apply the kept charges, each to its own day. False if the store failed again
        (what is left stays kept); True otherwise, also when another call is applying."""
        if (not self._unsent and not self._sent) or self._applying.locked():
            return True
        async with self._applying:
            applied = 0
            # Charges already sent once go first: a store still down fails on one of them,
            # so retries do not split the summed, unsent ones into ever more ids.
            while self._sent or self._unsent:
                if self._sent:
                    charge_id = next(iter(self._sent))
                    charge = self._sent[charge_id]
                else:
                    (device, day), tokens = next(iter(self._unsent.items()))
                    del self._unsent[(device, day)]
                    charge_id, charge = uuid.uuid4().hex, Kept(device, day, tokens)
                    self._sent[charge_id] = charge
                    self._dirty = True
                try:
                    await self.store.add_tokens(
                        charge.device, charge.day, charge.tokens, charge_id=charge_id
                    )
                except StoreUnavailable as exc:
                    self._cause = exc.cause
                    if applied:
                        log.info("deferred usage charged", extra={"fields": {"tokens": applied}})
                    return False
                del self._sent[charge_id]
                self._dirty = True
                self._uncharged -= charge.tokens
                applied += charge.tokens
            log.info("deferred usage charged", extra={"fields": {"tokens": applied}})
            return True

    def persist(self) -> None:
        """Write the kept charges to the journal if they changed (no journal: nothing)."""
        if self._journal is None or not self._dirty:
            return
        try:
            self._journal.write(self._unsent, self._sent)
            self._dirty = False
        except OSError as exc:
            log.error("kept usage not saved",
                      extra={"fields": {"path": str(self._journal.path), "error": str(exc)}})

    async def close(self) -> None:
        """At shutdown: try the kept charges once more, save those still not charged to the
        journal (for the next gateway on this state folder), and log them."""
        charged = await self.apply_uncharged()
        self.persist()
        if self._journal is not None:
            self._journal.close()
        if charged:
            return
        left = [*((d, day, t) for (d, day), t in self._unsent.items()),
                *((c.device, c.day, c.tokens) for c in self._sent.values())]
        for device, day, tokens in left:
            log.warning(
                "usage not charged",
                extra={"fields": {"device": device, "day": _date(day), "tokens": tokens}},
            )
        kept_in = (str(self._journal.path) if self._journal is not None and not self._dirty
                   else None)  # None: lost with this process
        log.error(
            "usage not charged at shutdown",
            extra={"fields": {"charges": len(left), "tokens": sum(t for _, _, t in left),
                              "kept_in": kept_in}},
        )


def _date(day: int) -> str:
    """A UTC day number as YYYY-MM-DD, for logs."""
    return time.strftime("%Y-%m-%d", time.gmtime(day * DAY))
