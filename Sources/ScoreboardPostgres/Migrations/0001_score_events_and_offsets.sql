-- Score events as the workers applied them, deduplicated by event id, and the consumer offsets that were
-- committed in the same transaction (the exactly-once design: results and offsets move together).

CREATE TABLE score_events (
    event_id        uuid PRIMARY KEY,
    user_id         text        NOT NULL,
    action          text        NOT NULL,
    points          bigint      NOT NULL CHECK (points >= 0),
    occurred_at     timestamptz NOT NULL,
    region          text,
    guild           text,
    idempotency_key uuid        NOT NULL,
    source          text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    applied_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX score_events_user_time ON score_events (user_id, occurred_at);

-- The next offset to read per partition, for one consumer group. topic_id identifies the incarnation of the
-- topic: when the broker reports another id (topic recreated, or a memory-only broker restarted), the stored
-- offsets belong to a log that no longer exists and the worker starts the new one from 0.
CREATE TABLE consumer_offsets (
    consumer_group  text        NOT NULL,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    topic_id        text        NOT NULL,
    next_offset     bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, kafka_partition)
);
