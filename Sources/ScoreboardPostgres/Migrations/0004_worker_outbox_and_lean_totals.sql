-- The workers' outbox: what a committed batch still owes outside PostgreSQL (Redis boards, leaderboard updates, dead
-- letters). A batch's rows are written in its transaction, beside its events, totals and offsets, and deleted once
-- its effects are done; the projection runs after COMMIT, so no row lock is held across a Redis or Kafka round trip.
-- A worker that crashes in between leaves rows here, and the partition's next owner produces their effects from the
-- totals then current when it claims the partition. Expected to stay nearly empty.
CREATE TABLE worker_outbox (
    id              bigserial   PRIMARY KEY,
    consumer_group  text        NOT NULL,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    stage           text        NOT NULL,
    payload         bytea       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX worker_outbox_by_partition ON worker_outbox (consumer_group, topic, kafka_partition, id);

-- Fences a projection: waits while a claim of any of the partitions is in progress (the claim takes the same keys
-- exclusively), then returns the partitions whose epoch is no longer the one given. Run inside the projection's
-- transaction, whose lock it holds until COMMIT: a claim therefore waits for a projection in flight, and a
-- projection that starts after a claim sees the new epoch and does nothing. PL/pgSQL, because the epochs must be
-- read after the locks are granted (a new statement, a new snapshot), not from the snapshot taken before waiting.
CREATE FUNCTION worker_projection_fence(p_group text, p_topic text, p_partitions integer[], p_epochs bigint[])
RETURNS integer[] LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_part integer;
    lost integer[];
BEGIN
    -- In partition order, as the claims take them, so that the two cannot deadlock.
    FOR v_part IN SELECT DISTINCT x FROM unnest(p_partitions) AS x ORDER BY x LOOP
        PERFORM pg_advisory_xact_lock_shared(hashtext(current_schema() || ':' || p_group || ':' || p_topic), v_part);
    END LOOP;
    SELECT coalesce(array_agg(e.part ORDER BY e.part), '{}') INTO lost
    FROM unnest(p_partitions, p_epochs) AS e(part, epoch)
    LEFT JOIN consumer_offsets o ON o.consumer_group = p_group AND o.topic = p_topic AND o.kafka_partition = e.part
    WHERE o.epoch IS DISTINCT FROM e.epoch;
    RETURN lost;
END
$$;

-- The claim's side of the fence: taken exclusively, in the claim's transaction, before the epochs are bumped.
CREATE FUNCTION worker_claim_fence(p_group text, p_topic text, p_partitions integer[])
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_part integer;
BEGIN
    FOR v_part IN SELECT DISTINCT x FROM unnest(p_partitions) AS x ORDER BY x LOOP
        PERFORM pg_advisory_xact_lock(hashtext(current_schema() || ':' || p_group || ':' || p_topic), v_part);
    END LOOP;
END
$$;

-- member_totals kept three secondary indexes that every new row maintains. Only member_totals_by_user serves a read
-- (the worker's read-back of a batch's members: `user_id = ANY(...) AND period = ANY(...)`). The archive reads
-- (`board_standings`, and `placements` by user, window and period) filter on the primary key's leading
-- (board_window, period) columns; the region and guild indexes only narrowed an archived region or guild board's scan
-- within one period, which the archive path bounds and caches, at the cost of two more index entries per new row on
-- the hot path.
DROP INDEX member_totals_by_region;
DROP INDEX member_totals_by_guild;
