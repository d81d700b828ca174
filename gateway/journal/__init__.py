"""The lot's journal: one SQLite file, a transactional outbox.

A state change (a session opened, a fee fixed, a bay freed) and the events that report it
commit in one transaction, or not at all; the sync side reads the outbox and never blocks a
lane. `Journal` is the daemon's one writer; `JournalReader` reads a live journal for the CLI.
The records it hands out are plain values in `gateway.core.records`.
"""

from gateway.core.records import (
    Alarm,
    BayRecord,
    ConfigVersion,
    OutboxRecord,
    PaymentRecord,
    SessionRecord,
)
from gateway.journal.writer import (
    INSERT_EVENT_SQL,
    Audit,
    Change,
    CloseSession,
    Journal,
    JournalClosedError,
    JournalError,
    JournalFullError,
    JournalLockedError,
    JournalReader,
    JournalReadOnlyError,
    JournalStats,
    JournalWriteError,
    OpenSession,
    PutConfig,
    RecordPayment,
    SetBayState,
    migrations,
)

__all__ = [
    "INSERT_EVENT_SQL",
    "Alarm",
    "Audit",
    "BayRecord",
    "Change",
    "CloseSession",
    "ConfigVersion",
    "Journal",
    "JournalClosedError",
    "JournalError",
    "JournalFullError",
    "JournalLockedError",
    "JournalReadOnlyError",
    "JournalReader",
    "JournalStats",
    "JournalWriteError",
    "OpenSession",
    "OutboxRecord",
    "PaymentRecord",
    "PutConfig",
    "RecordPayment",
    "SessionRecord",
    "SetBayState",
    "migrations",
]
