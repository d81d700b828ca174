"""Who is asking, and what they may do: roles, API tokens, browser sessions, failed logins.

Roles:

- `viewer`: availability only; anyone who reaches the port is one with
  `http.anonymous_viewer = true`;
- `technician`: reads everything (lanes, alarms, sessions, events, metrics) and takes the
  technician's actions;
- `device`: a pay station or another lane device: reads availability, as a viewer, and pays
  on foot (`pay`: a stay's fee, a payment), each station under its own account, whose name is
  recorded with each payment it makes.

An API client sends `Authorization: Bearer <account>.<secret>`; a browser logs in with a
password and gets a session cookie (the server sets it HttpOnly, SameSite=Strict, Secure under
TLS), and then sends the session's CSRF token in `X-CSRF-Token` with every action.

Failed logins and bad tokens are counted per client address and per account, and past
`http.login_failures_per_min` in a minute the next try is refused (429) until the oldest
failure is a minute old. scrypt's cost is a core and 16 MiB: one check runs at a time, in a
thread, so a flood of logins neither stalls the lanes nor fills the memory. An unknown
account costs a check as a known one does, so the time of the answer does not tell whether it
exists.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from gateway.config import HttpRole, HttpServerConfig
from gateway.web.accounts import token_account, verify_secret

Permission = Literal["availability", "read", "act", "pay"]
GRANTS: Mapping[HttpRole, frozenset[Permission]] = {
    "viewer": frozenset({"availability"}),
    "device": frozenset({"availability", "pay"}),
    "technician": frozenset({"availability", "read", "act"}),
}

FAILURE_WINDOW_S = 60.0
MAX_SESSIONS = 256  # the oldest goes when one more logs in
MAX_FAILURE_KEYS = 4096  # addresses and accounts remembered; the oldest are forgotten
# Checked in place of an unknown account's hash, at the same cost (its secret is not kept).
_DECOY = ("scrypt:16384:8:1$ue0Sh3fHqXX5X4kZ8ihK7Q==$"
          "iP39ZxlO9bXzkU3w8n3J6CThF1OEm2nB5E6qgaDrc7c=")


@dataclass(frozen=True, slots=True)
class Session:
    """A browser's login."""

    id: str  # the cookie's value
    account: str
    role: HttpRole
    csrf: str  # sent back in X-CSRF-Token with each action
    expires: float  # on the monotonic clock


@dataclass(frozen=True, slots=True)
class Identity:
    role: HttpRole
    account: str | None = None  # None: anonymous
    session: Session | None = None  # set when the browser's cookie says who it is

    @property
    def actor(self) -> str:
        """Who the audit trail names: `http:<account>`."""
        return f"http:{self.account or 'anonymous'}"

    def may(self, permission: Permission) -> bool:
        return permission in GRANTS[self.role]


class Unauthenticated(Exception):
    """Bad credentials; the message says so without saying which part was wrong."""


class TooManyFailures(Exception):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


class Failures:
    """Failed attempts per key over the last `window_s`, at most `limit` of them."""

    def __init__(self, limit: int, *, window_s: float = FAILURE_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._times: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, key: str) -> float | None:
        """Seconds until `key` may try again; None if it may now."""
        times = self._recent(key)
        if len(times) < self.limit:
            return None
        return max(0.0, times[0] + self.window_s - self._clock()) or None

    def failed(self, key: str) -> None:
        self._recent(key).append(self._clock())
        self._times.move_to_end(key)
        while len(self._times) > MAX_FAILURE_KEYS:
            self._times.popitem(last=False)

    def _recent(self, key: str) -> deque[float]:
        times = self._times.setdefault(key, deque(maxlen=self.limit))
        while times and times[0] <= self._clock() - self.window_s:
            times.popleft()
        return times


class Authenticator:
    """Checks tokens and passwords against `[http.accounts]`; keeps the browsers' sessions."""

    def __init__(self, config: HttpServerConfig, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.accounts = config.accounts
        self.anonymous = Identity("viewer") if config.anonymous_viewer else None
        self.session_max_age_s = config.session_max_age_s
        self.failures = Failures(config.login_failures_per_min, clock=clock)
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._known_tokens: dict[bytes, str] = {}  # sha256 of a checked token -> its account
        self._checking = asyncio.Semaphore(1)

    async def by_token(self, token: str, address: str) -> Identity:
        """The account whose API token this is. Raises Unauthenticated, TooManyFailures."""
        digest = hashlib.sha256(token.encode()).digest()
        if (name := self._known_tokens.get(digest)) is not None:
            return Identity(self.accounts[name].role, name)
        name = token_account(token) or ""
        account = self.accounts.get(name)
        hashed = account.token_hash if account is not None else None
        await self._check(token, hashed, address, name)
        self._known_tokens[digest] = name
        return Identity(self.accounts[name].role, name)

    async def login(self, name: str, password: str, address: str) -> Session:
        """A new session for a right password. Raises Unauthenticated, TooManyFailures."""
        account = self.accounts.get(name)
        hashed = account.password_hash if account is not None else None
        await self._check(password, hashed, address, name)
        assert account is not None
        session = Session(secrets.token_urlsafe(32), name, account.role,
                          secrets.token_urlsafe(32), self._clock() + self.session_max_age_s)
        self._sessions[session.id] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def by_cookie(self, session_id: str) -> Identity | None:
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires <= self._clock():
            del self._sessions[session_id]
            return None
        return Identity(session.role, session.account, session)

    def logout(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    async def _check(self, secret: str, hashed: str | None, address: str, name: str) -> None:
        keys = [f"address:{address}"] + ([f"account:{name}"] if name in self.accounts else [])
        waits = [wait for key in keys if (wait := self.failures.retry_after(key)) is not None]
        if waits:
            raise TooManyFailures(max(waits))
        async with self._checking:
            right = await asyncio.to_thread(verify_secret, secret, hashed or _DECOY)
        if not right or hashed is None:
            for key in keys:
                self.failures.failed(key)
            raise Unauthenticated("unknown account, or a wrong password or token")
