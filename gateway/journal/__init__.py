"""The lot's journal: one SQLite file, a transactional outbox.

A state change (a session opened, a fee fixed, a bay freed) and the events that report it
commit in one transaction, or not at all; the sync side reads the outbox and never blocks a
lane. `Journal` is the daemon's one writer (`writer`), and announces each commit on its
`ChangeFeed` (`changes`); `JournalReader` reads a live journal for the CLI (`reader`);
`recovery` opens, checks and repairs the file. The records it hands out are plain values in
`gateway.core.records`.
"""

from gateway.core.records import (
    Alarm,
    BayRecord,
    ConfigVersion,
    OutboxRecord,
    PaymentRecord,
    SessionRecord,
)
from gateway.journal.changes import ChangeFeed
from gateway.journal.errors import (
    JournalClosedError,
    JournalError,
    JournalFullError,
    JournalLockedError,
    JournalReadOnlyError,
    JournalWriteError,
)
from gateway.journal.reader import JournalReader, JournalStats
from gateway.journal.recovery import migrations
from gateway.journal.rows import (
    INSERT_EVENT_SQL,
    Audit,
    Change,
    CloseSession,
    OpenSession,
    PutConfig,
    PutSetting,
    RecordPayment,
    SetBayState,
)
from gateway.journal.writer import Journal

__all__ = [
    "INSERT_EVENT_SQL",
    "Alarm",
    "Audit",
    "BayRecord",
    "Change",
    "ChangeFeed",
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
    "PutSetting",
    "RecordPayment",
    "SessionRecord",
    "SetBayState",
    "migrations",
]
