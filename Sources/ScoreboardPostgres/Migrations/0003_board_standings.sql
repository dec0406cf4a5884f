-- One board's standings from the stored totals: each member's score (the sum of their rows in the window period,
-- within the region or guild when given), its competition rank, its place in Redis's order (score descending,
-- member descending for ties), and the number of members. The query API serves archived periods from it.
CREATE FUNCTION board_standings(p_window text, p_period text, p_region text, p_guild text)
RETURNS TABLE (user_id text, score bigint, rank bigint, board_position bigint, members bigint)
LANGUAGE sql STABLE AS $$
    WITH scores AS (
        SELECT t.user_id, sum(t.points)::bigint AS score FROM member_totals t
        WHERE t.board_window = p_window AND t.period = p_period
          AND (p_region IS NULL OR t.region = p_region)
          AND (p_guild IS NULL OR t.guild = p_guild)
        GROUP BY t.user_id
    )
    SELECT s.user_id, s.score,
           rank() OVER (ORDER BY s.score DESC)::bigint,
           row_number() OVER (ORDER BY s.score DESC, s.user_id DESC)::bigint,
           count(*) OVER ()::bigint
    FROM scores s
$$;
