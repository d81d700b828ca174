-- 0004: indexes for the retention run (docs/privacy.md), so that each maintenance pass finds
-- what has expired without reading every row of a year's sessions and events.

-- Closed sessions by exit time; an open session (no exit yet) has no entry.
CREATE INDEX sessions_by_exit ON sessions (exit_at) WHERE exit_at IS NOT NULL;

-- Violations by time: those that name a plate outside any session (a refused or unmatched
-- car) are kept a much shorter time than other events (`refused_retention_h`).
CREATE INDEX outbox_violations_by_time ON outbox (time) WHERE type = 'violation.detected';
