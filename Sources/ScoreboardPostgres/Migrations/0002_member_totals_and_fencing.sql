-- Window totals, stored once per member × window × period × region × guild: the global, region and guild boards of
-- a window are projections of these rows (sums over them), so an event costs one row per window, not one per board.
-- Region and guild are '' when the event had none (identifiers are never empty). Rows of closed periods stay:
-- they are the archived final standings.
CREATE TABLE member_totals (
    board_window text        NOT NULL,
    period       text        NOT NULL,
    user_id      text        NOT NULL,
    region       text        NOT NULL DEFAULT '',
    guild        text        NOT NULL DEFAULT '',
    points       bigint      NOT NULL CHECK (points >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (board_window, period, user_id, region, guild)
);

CREATE INDEX member_totals_by_user ON member_totals (user_id, board_window, period);
CREATE INDEX member_totals_by_region ON member_totals (board_window, period, region);
CREATE INDEX member_totals_by_guild ON member_totals (board_window, period, guild);

-- Fencing: a worker that is assigned a partition bumps its epoch, and every batch transaction checks that the epoch
-- is still the one it claimed. A worker that lost the partition in a rebalance it has not noticed yet (a zombie)
-- fails that check and rolls back instead of writing beside the new owner.
ALTER TABLE consumer_offsets ADD COLUMN epoch bigint NOT NULL DEFAULT 0;
