-- 0001: the journal's first schema.
-- Every table the lanes and sync use; applied in one transaction with user_version.

-- Key/value facts about this journal that must outlive pruning:
-- last_seq (the gapless event sequence's high-water mark) and acked_through
-- (every event up to it has been acknowledged by the backend).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('last_seq', 0), ('acked_through', 0);

-- The transactional outbox. seq is assigned by the single writer, gapless.
-- data is the CloudEvents `data` member as JSON text; the envelope is built on read.
CREATE TABLE outbox (
    seq      INTEGER PRIMARY KEY,
    id       TEXT NOT NULL,          -- UUIDv7
    type     TEXT NOT NULL,          -- short name, e.g. session.started
    time     TEXT NOT NULL,          -- RFC 3339 UTC
    data     TEXT NOT NULL,
    acked_at TEXT                    -- NULL until the backend acknowledged it
);

-- Parking sessions (APDS Session), one row per vehicle stay.
CREATE TABLE sessions (
    session_id     TEXT PRIMARY KEY,
    plate          TEXT,
    status         TEXT NOT NULL CHECK (status IN ('open', 'closed')),
    right_kind     TEXT NOT NULL,    -- visitor | permit | reservation | account
    right_ref      TEXT,
    entry_lane     TEXT,
    entry_at       TEXT NOT NULL,    -- RFC 3339 UTC, as the wall clock said
    entry_mono     REAL NOT NULL,
    entry_boot     TEXT NOT NULL,
    entry_synced   INTEGER NOT NULL, -- wall clock NTP-synchronised at entry
    exit_lane      TEXT,
    exit_at        TEXT,
    exit_mono      REAL,
    exit_boot      TEXT,
    exit_synced    INTEGER,
    duration_s     REAL,
    clock_reliable INTEGER,
    fee_minor      INTEGER,
    currency       TEXT,
    data           TEXT NOT NULL DEFAULT '{}'   -- extra APDS fields as JSON
);
CREATE INDEX sessions_open_by_plate ON sessions (plate) WHERE status = 'open';

-- Latest known state of each bay; rewritten only when it changes.
CREATE TABLE bay_state (
    bay_id  TEXT PRIMARY KEY,
    state   TEXT NOT NULL,            -- free | occupied | unknown (checked by SetBayState)
    since   TEXT NOT NULL,
    source  TEXT NOT NULL,
    healthy INTEGER NOT NULL
) WITHOUT ROWID;

-- Versioned config pushed by the backend: tariffs, permits, reservations, deny list.
-- Every version is kept; the highest applied one is in force.
CREATE TABLE config_cache (
    kind       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    payload    TEXT NOT NULL,        -- JSON
    source     TEXT NOT NULL,        -- mqtt | http | local
    applied_at TEXT NOT NULL,
    PRIMARY KEY (kind, version)
) WITHOUT ROWID;

-- Who did what on site or remotely: manual vends, commands, config changes.
CREATE TABLE audit (
    id      INTEGER PRIMARY KEY,
    at      TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    subject TEXT,
    reason  TEXT,
    details TEXT NOT NULL DEFAULT '{}'
);
