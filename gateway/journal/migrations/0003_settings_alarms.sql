-- 0003: the technician's settings and the active alarms, so that a restart (or a corrupt-file
-- recovery) brings back the lot as it was left: a closed lot stays closed, a bay taken out of
-- service stays out, an alarm stays raised until its cause clears or a technician acknowledges it.

-- One row per setting: key is `lot.state`, `lane.mode:<lane>` or `bay.service:<bay>`;
-- value is JSON.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    at    TEXT NOT NULL,             -- RFC 3339 UTC
    actor TEXT NOT NULL
) WITHOUT ROWID;

-- The alarms raised and not yet cleared or acknowledged; written in the transaction of their
-- alarm.raised event, deleted in that of their alarm.cleared.
CREATE TABLE alarms (
    alarm_id  TEXT PRIMARY KEY,
    severity  TEXT NOT NULL,
    message   TEXT NOT NULL,
    details   TEXT NOT NULL DEFAULT '{}',   -- JSON
    component TEXT NOT NULL,
    raised_at TEXT NOT NULL          -- RFC 3339 UTC
) WITHOUT ROWID;
