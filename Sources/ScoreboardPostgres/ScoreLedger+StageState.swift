import Foundation
import Logging
import PostgresNIO
import ScoreboardCore

// The worker stages' state (ScoreboardCore/StageState.swift, migration 0005): read and written inside a batch's
// transaction by ``ScoreLedger/apply(_:aggregate:reads:beforeCommit:)``, read by the query roles through the readers
// below.
extension ScoreLedger {
    /// Reads the state rows named, locked until COMMIT. A key not written yet gets an empty placeholder row first, so
    /// that it can be locked too: two workers creating the same key (a population profile) then serialise on it instead
    /// of both reading "absent" and the later write losing the earlier one. Keys are taken in order (no deadlock).
    func readStageState(_ reads: StageReads, connection: PostgresConnection) async throws -> StageState {
        guard !reads.state.isEmpty else { return StageState() }
        let keys = reads.state.sorted()
        try await connection.queryRows("""
            INSERT INTO stage_state (stage, key, value)
            SELECT k.stage, k.key, '\\x'::bytea FROM unnest(\(keys.map(\.stage))::text[], \(keys.map(\.key))::text[]) WITH ORDINALITY AS k(stage, key, n)
            ORDER BY k.n
            ON CONFLICT (stage, key) DO NOTHING
            """, logger: logger)
        let rows = try await connection.queryRows("""
            SELECT s.stage, s.key, s.value FROM stage_state s
            JOIN unnest(\(keys.map(\.stage))::text[], \(keys.map(\.key))::text[]) AS k(stage, key) ON s.stage = k.stage AND s.key = k.key
            ORDER BY s.stage, s.key
            FOR UPDATE OF s
            """, logger: logger)
        var values: [StageKey: [UInt8]] = [:]
        for row in rows {
            let (stage, key, value) = try row.decode((String, String, Data).self)
            if !value.isEmpty { values[StageKey(stage: stage, key: key)] = Array(value) }
        }
        return StageState(values: values)
    }

    /// Writes a batch's stage state: values replaced, counters added to, set members and records inserted once.
    func writeStageState(_ writes: StageWrites, connection: PostgresConnection) async throws {
        if !writes.state.isEmpty {
            let entries = writes.state.sorted { $0.key < $1.key }
            try await connection.queryRows("""
                INSERT INTO stage_state (stage, key, value)
                SELECT v.stage, v.key, decode(v.value, 'base64')
                FROM unnest(\(entries.map(\.key.stage))::text[], \(entries.map(\.key.key))::text[],
                            \(entries.map { Data($0.value).base64EncodedString() })::text[]) AS v(stage, key, value)
                ON CONFLICT (stage, key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
                """, logger: logger)
        }
        if !writes.counters.isEmpty {
            let entries = writes.counters.sorted { $0.key < $1.key }
            try await connection.queryRows("""
                INSERT INTO stage_counters (stage, key, value)
                SELECT * FROM unnest(\(entries.map(\.key.stage))::text[], \(entries.map(\.key.key))::text[], \(entries.map(\.value))::bigint[])
                ON CONFLICT (stage, key) DO UPDATE SET value = stage_counters.value + EXCLUDED.value
                """, logger: logger)
        }
        if !writes.members.isEmpty {
            let members = writes.members.sorted { ($0.set, $0.member) < ($1.set, $1.member) }
            try await connection.queryRows("""
                INSERT INTO stage_set_members (stage, set_key, member)
                SELECT * FROM unnest(\(members.map(\.set.stage))::text[], \(members.map(\.set.key))::text[], \(members.map(\.member))::text[])
                ON CONFLICT DO NOTHING
                """, logger: logger)
        }
        if !writes.records.isEmpty {
            try await connection.queryRows(Self.insertingRecords(writes.records), logger: logger)
        }
    }

    /// Inserts records once per (stage, id) and returns one row per record that was new.
    static func insertingRecords(_ records: [StageRecord]) -> PostgresQuery {
        """
        INSERT INTO stage_records (stage, id, user_id, occurred_at, payload)
        SELECT r.stage, r.id, NULLIF(r.user_id, ''), to_timestamp(r.at / 1000.0), r.payload::jsonb
        FROM unnest(\(records.map(\.key.stage))::text[], \(records.map(\.key.key))::text[], \(records.map { $0.userID ?? "" })::text[],
                    \(records.map(\.occurredAt.millisecondsSinceEpoch))::bigint[],
                    \(records.map { String(decoding: $0.payload, as: UTF8.self) })::text[]) AS r(stage, id, user_id, at, payload)
        ON CONFLICT (stage, id) DO NOTHING
        RETURNING 1
        """
    }

    // MARK: Readers (query roles, tests)

    /// The committed values of these keys (absent: never written).
    public func stageState(_ keys: [StageKey]) async throws -> [StageKey: [UInt8]] {
        guard !keys.isEmpty else { return [:] }
        let rows = try await client.queryRows("""
            SELECT s.stage, s.key, s.value FROM stage_state s
            JOIN unnest(\(keys.map(\.stage))::text[], \(keys.map(\.key))::text[]) AS k(stage, key) ON s.stage = k.stage AND s.key = k.key
            WHERE length(s.value) > 0
            """, logger: logger)
        var values: [StageKey: [UInt8]] = [:]
        for row in rows {
            let (stage, key, value) = try row.decode((String, String, Data).self)
            values[StageKey(stage: stage, key: key)] = Array(value)
        }
        return values
    }

    /// The committed counters of these keys (absent: never added to).
    public func stageCounters(_ keys: [StageKey]) async throws -> [StageKey: Int64] {
        guard !keys.isEmpty else { return [:] }
        let rows = try await client.queryRows("""
            SELECT c.stage, c.key, c.value FROM stage_counters c
            JOIN unnest(\(keys.map(\.stage))::text[], \(keys.map(\.key))::text[]) AS k(stage, key) ON c.stage = k.stage AND c.key = k.key
            """, logger: logger)
        var values: [StageKey: Int64] = [:]
        for row in rows {
            let (stage, key, value) = try row.decode((String, String, Int64).self)
            values[StageKey(stage: stage, key: key)] = value
        }
        return values
    }

    /// How many members each of these sets has.
    public func stageSetSizes(_ sets: [StageKey]) async throws -> [StageKey: Int] {
        guard !sets.isEmpty else { return [:] }
        let rows = try await client.queryRows("""
            SELECT m.stage, m.set_key, count(*) FROM stage_set_members m
            JOIN unnest(\(sets.map(\.stage))::text[], \(sets.map(\.key))::text[]) AS k(stage, key) ON m.stage = k.stage AND m.set_key = k.key
            GROUP BY m.stage, m.set_key
            """, logger: logger)
        var sizes: [StageKey: Int] = [:]
        for row in rows {
            let (stage, key, count) = try row.decode((String, String, Int64).self)
            sizes[StageKey(stage: stage, key: key)] = Int(count)
        }
        return sizes
    }

    /// A stage's records about one user (or all users when `userID` is `nil`), in event time order, `occurredAt` in
    /// `[from, to)`, at most `limit`.
    public func stageRecords(
        stage: String, userID: String? = nil, from: Timestamp? = nil, to: Timestamp? = nil, limit: Int = 100
    ) async throws -> [StageRecord] {
        let rows = try await client.queryRows("""
            SELECT id, user_id, (extract(epoch FROM occurred_at) * 1000)::bigint, payload::text FROM stage_records
            WHERE stage = \(stage) AND (\(userID)::text IS NULL OR user_id = \(userID))
              AND (\(from?.millisecondsSinceEpoch)::bigint IS NULL OR occurred_at >= to_timestamp(\(from?.millisecondsSinceEpoch)::bigint / 1000.0))
              AND (\(to?.millisecondsSinceEpoch)::bigint IS NULL OR occurred_at < to_timestamp(\(to?.millisecondsSinceEpoch)::bigint / 1000.0))
            ORDER BY occurred_at, id
            LIMIT \(limit)
            """, logger: logger)
        return try rows.map { row in
            let (id, user, at, payload) = try row.decode((String, String?, Int64, String).self)
            return StageRecord(
                key: StageKey(stage: stage, key: id), userID: user, occurredAt: Timestamp(millisecondsSinceEpoch: at), payload: Array(payload.utf8))
        }
    }
}
