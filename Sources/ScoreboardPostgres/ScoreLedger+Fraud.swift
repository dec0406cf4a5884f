import Foundation
import Logging
import PostgresNIO
import ScoreboardCore

// Fraud review (migration 0007): the flags are the fraud stage's records (stage_records, stage 'fraud'); reviews,
// bans and the append-only audit log sit beside them. Read and written by the query role's admin endpoints.
extension ScoreLedger {
    static let fraudStage = "fraud"

    /// One page of flags, in detection order, with their reviews; `query.limit` at most.
    public func fraudFlags(_ query: FraudFlagQuery) async throws -> [ReviewedFraudFlag] {
        let status = query.status?.rawValue
        let rows = try await client.queryRows("""
            SELECT r.payload::text, v.decision, v.note, v.reviewer, (extract(epoch FROM v.reviewed_at) * 1000)::bigint
            FROM stage_records r LEFT JOIN fraud_reviews v ON v.flag_id = r.id
            WHERE r.stage = \(Self.fraudStage)
              AND (\(query.userID)::text IS NULL OR r.user_id = \(query.userID))
              AND (\(query.rule)::text IS NULL OR r.payload->>'rule' = \(query.rule))
              AND (\(status)::text IS NULL OR CASE WHEN v.decision IS NULL THEN 'open' WHEN v.decision = 'confirm' THEN 'confirmed' ELSE 'dismissed' END = \(status))
              AND (\(query.from)::bigint IS NULL OR (r.payload->>'detectedAt')::bigint >= \(query.from))
              AND (\(query.to)::bigint IS NULL OR (r.payload->>'detectedAt')::bigint < \(query.to))
              AND (\(query.after?.detectedAt)::bigint IS NULL
                   OR ((r.payload->>'detectedAt')::bigint, r.id) > (\(query.after?.detectedAt)::bigint, \(query.after?.flagID)::text))
            ORDER BY (r.payload->>'detectedAt')::bigint, r.id
            LIMIT \(query.limit)
            """, logger: logger)
        return try rows.map(Self.reviewedFlag)
    }

    /// One flag with its review, `nil` when there is no such flag.
    public func fraudFlag(id: String) async throws -> ReviewedFraudFlag? {
        let rows = try await client.queryRows("""
            SELECT r.payload::text, v.decision, v.note, v.reviewer, (extract(epoch FROM v.reviewed_at) * 1000)::bigint
            FROM stage_records r LEFT JOIN fraud_reviews v ON v.flag_id = r.id
            WHERE r.stage = \(Self.fraudStage) AND r.id = \(id)
            """, logger: logger)
        return try rows.first.map(Self.reviewedFlag)
    }

    static func reviewedFlag(_ row: PostgresRow) throws -> ReviewedFraudFlag {
        let (payload, decision, note, reviewer, at) = try row.decode((String, String?, String?, String?, Int64?).self)
        let flag = try JSONDecoder().decode(FraudFlagMessage.self, from: Data(payload.utf8))
        let review = decision.flatMap(FraudReviewDecision.init(rawValue:)).map {
            FraudReview(decision: $0, note: note ?? "", reviewer: reviewer ?? "", reviewedAt: at ?? 0)
        }
        return ReviewedFraudFlag(flag: flag, review: review)
    }

    /// Reviews a flag in one transaction: the review (once per flag: a second finds it and is refused), the audit
    /// entry, and the decision's own changes. **Confirm** bans the user (fraud_bans); their totals are left to the
    /// worker that owns their events, which deletes them when the ban published by `beforeCommit` reaches it (ordered
    /// with those events: ScoreLedger+Bans.swift). **Dismiss** reopens the rule in the user's fraud profile, so it can
    /// fire again. `beforeCommit` runs the effects outside PostgreSQL (Redis, the ban's publishing) with what changed,
    /// before COMMIT: if they fail, nothing is recorded and the review can be made again (they are idempotent).
    /// - Throws: ``FraudReviewRefusal`` (nothing changed) when the flag does not exist or was reviewed already.
    public func reviewFraudFlag(
        id: String, decision: FraudReviewDecision, note: String, reviewer: String, at: Timestamp,
        beforeCommit: @Sendable (FraudReviewEffects) async throws -> Void
    ) async throws -> ReviewedFraudFlag {
        try await client.withTransactionRows(logger: logger) { connection in
            // The flag's row is locked, so two reviews of one flag take turns and the second sees the first.
            let flagRows = try await connection.queryRows("""
                SELECT payload::text FROM stage_records WHERE stage = \(Self.fraudStage) AND id = \(id) FOR UPDATE
                """, logger: logger)
            guard let payload = try flagRows.first?.decode(String.self) else { throw FraudReviewRefusal.unknownFlag }
            let flag = try JSONDecoder().decode(FraudFlagMessage.self, from: Data(payload.utf8))
            let existing = try await connection.queryRows("SELECT decision FROM fraud_reviews WHERE flag_id = \(id)", logger: logger)
            if let previous = try existing.first?.decode(String.self) {
                throw FraudReviewRefusal.alreadyReviewed(FraudReviewDecision(rawValue: previous)?.status ?? .confirmed)
            }
            let atMilliseconds = at.millisecondsSinceEpoch
            try await connection.queryRows("""
                INSERT INTO fraud_reviews (flag_id, user_id, decision, note, reviewer, reviewed_at)
                VALUES (\(id), \(flag.userID), \(decision.rawValue), \(note), \(reviewer), to_timestamp(\(atMilliseconds)::bigint / 1000.0))
                """, logger: logger)
            let detail = String(decoding: try JSONEncoder().encode(["note": note, "rule": flag.ruleID]), as: UTF8.self)
            try await connection.queryRows("""
                INSERT INTO fraud_audit (at, actor, action, user_id, flag_id, detail)
                VALUES (to_timestamp(\(atMilliseconds)::bigint / 1000.0), \(reviewer), \("review-" + decision.rawValue), \(flag.userID), \(id), \(detail)::jsonb)
                """, logger: logger)
            var ban: UserBanned?
            switch decision {
            case .confirm:
                try await connection.queryRows("""
                    INSERT INTO fraud_bans (user_id, flag_id, banned_at) VALUES (\(flag.userID), \(id), to_timestamp(\(atMilliseconds)::bigint / 1000.0))
                    ON CONFLICT (user_id) DO NOTHING
                    """, logger: logger)
                ban = UserBanned(userID: flag.userID, flagID: id, bannedAt: atMilliseconds)
            case .dismiss:
                try await reopenRule(flag.ruleID, userID: flag.userID, connection: connection)
            }
            try await beforeCommit(FraudReviewEffects(flag: flag, decision: decision, ban: ban))
            return ReviewedFraudFlag(
                flag: flag, review: FraudReview(decision: decision, note: note, reviewer: reviewer, reviewedAt: atMilliseconds))
        }
    }

    /// Takes the rule out of the user's raised rules in their fraud profile (``FraudDetector/reopen(ruleID:userID:)``),
    /// under the row lock the workers' batches take too.
    private func reopenRule(_ ruleID: String, userID: String, connection: PostgresConnection) async throws {
        let key = "user:\(userID)"
        let rows = try await connection.queryRows("""
            SELECT value FROM stage_state WHERE stage = \(Self.fraudStage) AND key = \(key) FOR UPDATE
            """, logger: logger)
        guard let value = try rows.first?.decode(Data.self), !value.isEmpty else { return }
        var profile = try JSONDecoder().decode(FraudUserProfile.self, from: value)
        guard profile.raisedRules.remove(ruleID) != nil else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let updated = try encoder.encode(profile)
        try await connection.queryRows("""
            UPDATE stage_state SET value = \(updated), updated_at = now() WHERE stage = \(Self.fraudStage) AND key = \(key)
            """, logger: logger)
    }

    /// The audit log, oldest first, `at` in `[from, to)`, at most `limit`.
    public func fraudAudit(userID: String?, from: Int64?, to: Int64?, limit: Int) async throws -> [FraudAuditEntry] {
        let rows = try await client.queryRows("""
            SELECT id, (extract(epoch FROM at) * 1000)::bigint, actor, action, user_id, flag_id, detail->>'note' FROM fraud_audit
            WHERE (\(userID)::text IS NULL OR user_id = \(userID))
              AND (\(from)::bigint IS NULL OR at >= to_timestamp(\(from)::bigint / 1000.0))
              AND (\(to)::bigint IS NULL OR at < to_timestamp(\(to)::bigint / 1000.0))
            ORDER BY at, id
            LIMIT \(limit)
            """, logger: logger)
        return try rows.map { row in
            let (id, at, actor, action, user, flag, note) = try row.decode((Int64, Int64, String, String, String?, String?, String?).self)
            return FraudAuditEntry(id: id, at: at, actor: actor, action: action, userID: user, flagID: flag, note: note)
        }
    }

    /// The user's most recent events, newest first: what reviewers see beside a flag.
    public func recentEvents(userID: String, limit: Int) async throws -> [ScoreEvent] {
        let rows = try await client.queryRows("""
            SELECT event_id::text, action, points, (extract(epoch FROM occurred_at) * 1000)::bigint, region, guild, idempotency_key::text, source
            FROM score_events WHERE user_id = \(userID)
            ORDER BY occurred_at DESC
            LIMIT \(limit)
            """, logger: logger)
        return try rows.map { row in
            let (id, action, points, at, region, guild, key, source) = try row.decode((String, String, Int64, Int64, String?, String?, String, String).self)
            return ScoreEvent(
                eventID: id, userID: userID, action: action, points: points, occurredAt: Timestamp(millisecondsSinceEpoch: at), region: region,
                guild: guild, idempotencyKey: key, source: ScoreEvent.Source(rawValue: source) ?? .player)
        }
    }
}
