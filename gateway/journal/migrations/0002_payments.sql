-- 0002: payments, so that a visitor who paid can leave after a restart of the gateway.
-- A payment arrives from the backend or a pay station (payment.recorded); the exit lane looks
-- up the session's payments. valid_until bounds how long after paying the car may leave.
CREATE TABLE payments (
    payment_id   TEXT PRIMARY KEY,
    session_id   TEXT NOT NULL,
    amount_minor INTEGER NOT NULL,
    currency     TEXT NOT NULL,
    method       TEXT NOT NULL,
    source       TEXT NOT NULL,
    paid_at      TEXT NOT NULL,       -- RFC 3339 UTC
    valid_until  TEXT                 -- RFC 3339 UTC; NULL: no limit
) WITHOUT ROWID;
CREATE INDEX payments_by_session ON payments (session_id);
