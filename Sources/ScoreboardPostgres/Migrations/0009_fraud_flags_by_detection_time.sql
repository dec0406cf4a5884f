-- The review listing (GET /v1/admin/fraud-flags, ScoreLedger.fraudFlags) filters and orders the fraud stage's records
-- by (detectedAt, id), where detectedAt is in the jsonb payload: without an index on that expression every page read
-- every flag and sorted them. Partial (stage = 'fraud'): achievements' records carry no detectedAt and are not
-- listed by it. The expression must be the query's own, `(payload->>'detectedAt')::bigint`, for the planner to use it.
CREATE INDEX stage_records_fraud_by_detected_at ON stage_records (((payload->>'detectedAt')::bigint), id) WHERE stage = 'fraud';
