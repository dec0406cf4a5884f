-- Analytics distinct counts (active users) become one stage-state value per cell, exact up to the catalog's
-- `distinctExactUpTo` members and a HyperLogLog sketch beyond it (ScoreboardCore/Analytics/HyperLogLog.swift,
-- `DistinctCount`), with the count kept beside it as a counter; until now they were rows of stage_set_members, one per
-- member and without bound. The sets already counted are carried over: each becomes an exact value (tag byte 1, then
-- its members joined by newlines) and its size a counter, so no bucket loses what it counted. A set larger than the
-- limit becomes a sketch when the next event of its bucket arrives.

INSERT INTO stage_state (stage, key, value)
SELECT stage, set_key, '\x01'::bytea || convert_to(string_agg(member, chr(10)), 'UTF8')
FROM stage_set_members
WHERE stage = 'analytics'
GROUP BY stage, set_key
ON CONFLICT (stage, key) DO NOTHING;

INSERT INTO stage_counters (stage, key, value)
SELECT stage, set_key, count(*)
FROM stage_set_members
WHERE stage = 'analytics'
GROUP BY stage, set_key
ON CONFLICT (stage, key) DO UPDATE SET value = EXCLUDED.value;

DELETE FROM stage_set_members WHERE stage = 'analytics';
