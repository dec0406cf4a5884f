-- Fraud review (issue 11): the flags themselves are the fraud stage's append-once records (stage_records, stage
-- 'fraud', id = the flag id, payload = the flag as published). A flag is open until it has a review; a review is
-- written once per flag (its primary key: a second review of the same flag finds it and is refused). Confirmed
-- flags ban their user (fraud_bans). Every admin action is appended to fraud_audit, which nothing updates or deletes
-- (the trigger refuses both, so an audit row stays as written).

CREATE TABLE fraud_reviews (
    flag_id     text        PRIMARY KEY,
    user_id     text        NOT NULL,
    decision    text        NOT NULL CHECK (decision IN ('confirm', 'dismiss')),
    note        text        NOT NULL,
    reviewer    text        NOT NULL,
    reviewed_at timestamptz NOT NULL
);

CREATE TABLE fraud_bans (
    user_id    text        PRIMARY KEY,
    flag_id    text        NOT NULL,
    banned_at  timestamptz NOT NULL
);

CREATE TABLE fraud_audit (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL,
    actor       text        NOT NULL,
    action      text        NOT NULL,
    user_id     text,
    flag_id     text,
    detail      jsonb       NOT NULL
);

CREATE INDEX fraud_audit_by_user ON fraud_audit (user_id, at);
CREATE INDEX fraud_audit_by_time ON fraud_audit (at);

CREATE FUNCTION fraud_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'fraud_audit is append-only';
END;
$$;

CREATE TRIGGER fraud_audit_append_only BEFORE UPDATE OR DELETE ON fraud_audit
    FOR EACH ROW EXECUTE FUNCTION fraud_audit_append_only();
