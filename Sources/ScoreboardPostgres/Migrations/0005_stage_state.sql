-- The worker stages' state beside the boards (achievements, player statistics, fraud profiles, analytics): written in
-- the batch's transaction, with its events, totals and offsets, so a replay (whose events are dropped as already
-- applied) changes none of it. Four shapes, each with the write that stays exact when several workers share a row
-- (ScoreboardCore/StageState.swift): values replaced under a row lock, counters only added to, set members inserted
-- once, records appended once per id.

CREATE TABLE stage_state (
    stage      text        NOT NULL,
    key        text        NOT NULL,
    -- Empty while only a placeholder: a batch inserts the keys it reads before locking them (ScoreLedger.readStageState).
    value      bytea       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stage, key)
);

CREATE TABLE stage_counters (
    stage      text   NOT NULL,
    key        text   NOT NULL,
    value      bigint NOT NULL,
    PRIMARY KEY (stage, key)
);

CREATE TABLE stage_set_members (
    stage      text NOT NULL,
    set_key    text NOT NULL,
    member     text NOT NULL,
    PRIMARY KEY (stage, set_key, member)
);

CREATE TABLE stage_records (
    stage       text        NOT NULL,
    id          text        NOT NULL,
    user_id     text,
    occurred_at timestamptz NOT NULL,
    payload     jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stage, id)
);

CREATE INDEX stage_records_by_user ON stage_records (stage, user_id, occurred_at);
CREATE INDEX stage_records_by_time ON stage_records (stage, occurred_at);
