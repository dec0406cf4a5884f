import Foundation
import Logging
import PostgresNIO
import ScoreboardCore

/// The workers' PostgreSQL: applied events, member window totals, and the consumer offsets stored beside them.
///
/// One ``apply(_:)`` is one transaction: the events (deduplicated by event id), the totals of the events that were
/// new, and each partition's next offset, checked against the epoch the worker claimed for the partition.
public struct ScoreLedger: Sendable {
    public let client: PostgresClient
    public let consumerGroup: String
    let logger: Logger

    public init(client: PostgresClient, consumerGroup: String, logger: Logger) {
        self.client = client
        self.consumerGroup = consumerGroup
        self.logger = logger
    }

    /// A trivial query: answers when PostgreSQL does.
    public func probe() async throws {
        _ = try await client.queryRows("SELECT 1", logger: logger)
    }

    /// Claims `partitions` of `topic` for this worker: bumps each epoch (fencing out the previous owner) and returns
    /// where to resume. When the stored `topic_id` differs from `topicID` the log was recreated (a memory-only
    /// broker restarted, or the topic was deleted), so the stored offset is meaningless and the claim starts at 0;
    /// the events already applied stay deduplicated by event id.
    public func claim(topic: String, topicID: String, partitions: [Int32]) async throws -> [PartitionClaim] {
        guard !partitions.isEmpty else { return [] }
        // The claim waits for this group's projections in flight on these partitions (migration 0004's fence): once
        // it commits, the previous owner projects nothing more of them, and the new owner re-projects what it left
        // in the outbox (``pendingOutbox(topic:partitions:)``), after it, never before.
        let rows = try await client.withTransactionRows(logger: logger) { connection in
            try await connection.queryRows(
                "SELECT worker_claim_fence(\(consumerGroup), \(topic), \(partitions)::integer[])", logger: logger)
            return try await connection.queryRows("""
            INSERT INTO consumer_offsets (consumer_group, topic, kafka_partition, topic_id, next_offset, epoch)
            SELECT \(consumerGroup), \(topic), p, \(topicID), 0, 1 FROM unnest(\(partitions)::integer[]) AS p
            ON CONFLICT (consumer_group, topic, kafka_partition) DO UPDATE SET
                epoch = consumer_offsets.epoch + 1,
                next_offset = CASE WHEN consumer_offsets.topic_id = EXCLUDED.topic_id THEN consumer_offsets.next_offset ELSE 0 END,
                topic_id = EXCLUDED.topic_id,
                updated_at = now()
            RETURNING kafka_partition, next_offset, epoch
            """, logger: logger)
        }
        var claims: [PartitionClaim] = []
        for row in rows {
            let (partition, next, epoch) = try row.decode((Int32, Int64, Int64).self)
            claims.append(PartitionClaim(partition: partition, nextOffset: next, epoch: epoch))
        }
        return claims.sorted { $0.partition < $1.partition }
    }

    /// Applies a batch in one transaction. `beforeCommit` runs inside it, after every write, with what changed and the
    /// stage state rows `reads` names (locked until COMMIT, ScoreLedger+StageState.swift), and returns the stage state
    /// to write and the outbox entries the batch owes after commit (Redis boards, updates, dead letters), which are written
    /// in the same transaction: the effects then run after COMMIT, with no row lock held (``project(topic:epochs:clearing:_:)``),
    /// and a crash in between leaves the entries for the partition's next owner. `aggregate` turns the new events into
    /// total rows: the ledger stores totals, the worker knows which windows exist.
    /// - Returns: The outbox rows written (their ids, to clear them) and what `beforeCommit` returned.
    /// - Throws: ``LedgerFenced`` (the transaction rolled back) or the database's error.
    public func apply<Due: Sendable>(
        _ batch: LedgerBatch, aggregate: @Sendable ([ScoreEvent]) -> BatchAggregation,
        reads: @Sendable (LedgerApplied) -> StageReads = { _ in .none },
        beforeCommit: @Sendable (LedgerApplied, StageState) async throws -> (outbox: [OutboxEntry], writes: StageWrites, due: Due)
    ) async throws -> (outbox: [PendingOutboxEntry], due: Due) {
        // withTransactionRows, not PostgresNIO's withTransaction: a row stream cut by a server that went away crashes
        // PostgresNIO 1.33.2 and its ROLLBACK after a lost connection never returns (PostgresStore.swift says why);
        // and it rethrows the body's own error (LedgerFenced) unwrapped.
        try await client.withTransactionRows(logger: logger) { connection in
            // Shared with every other batch, exclusive with a rebuild (``withBatchesPaused(_:)``): a rebuild
            // never reads totals that a batch in flight is about to change.
            _ = try await connection.queryRows(
                "SELECT pg_advisory_xact_lock_shared(hashtext(current_schema()), \(Self.projectionLockID))", logger: logger)
            try await checkEpochs(batch, connection: connection)
            let storedEvents = try await insertEvents(batch, connection: connection)
            // Stored, as evidence, but a banned user's events are not counted (ScoreLedger+Bans.swift).
            let bans = try await applyBans(batch, eventUsers: Set(storedEvents.map(\.userID)), connection: connection)
            let aggregation = aggregate(bans.banned.isEmpty ? storedEvents : storedEvents.filter { !bans.banned.contains($0.userID) })
            let totals = try await addTotals(aggregation, connection: connection)
            try await storeOffsets(batch, connection: connection)
            let applied = LedgerApplied(
                newEvents: aggregation.events, totals: totals, removedTotals: bans.removedTotals,
                banPartitions: Dictionary(batch.bans.map { ($0.ban.userID, $0.partition) }, uniquingKeysWith: { first, _ in first }))
            let state = try await readStageState(reads(applied), connection: connection)
            let (entries, writes, due) = try await beforeCommit(applied, state)
            try await writeStageState(writes, connection: connection)
            return (try await insertOutbox(entries, topic: batch.topic, connection: connection), due)
        }
    }

    private func insertOutbox(_ entries: [OutboxEntry], topic: String, connection: PostgresConnection) async throws -> [PendingOutboxEntry] {
        guard !entries.isEmpty else { return [] }
        let rows = try await connection.queryRows("""
            INSERT INTO worker_outbox (consumer_group, topic, kafka_partition, stage, payload)
            SELECT \(consumerGroup), \(topic), e.part, e.stage, decode(e.payload, 'base64')
            FROM unnest(\(entries.map(\.partition))::integer[], \(entries.map(\.stage))::text[],
                        \(entries.map { Data($0.payload).base64EncodedString() })::text[]) WITH ORDINALITY AS e(part, stage, payload, n)
            ORDER BY e.n
            RETURNING id
            """, logger: logger)
        let ids = try rows.map { try $0.decode(Int64.self) }.sorted()
        guard ids.count == entries.count else {
            throw StorageError(code: .unavailable, reason: "the outbox insert returned \(ids.count) ids for \(entries.count) entries")
        }
        // bigserial values of one INSERT ... ORDER BY are assigned in that order.
        return zip(ids, entries).map { PendingOutboxEntry(id: $0, entry: $1) }
    }

    /// Runs a committed batch's effects (`body`: Redis, Kafka) fenced by the partitions' epochs, then clears its outbox
    /// rows, all in one short transaction that holds no row lock: only the fence's shared advisory locks, which a
    /// claim of one of the partitions waits for. So a previous owner's projection either ends before the new owner's
    /// claim commits, or sees the new epoch and does nothing (the new owner re-projects the rows it left).
    /// - Returns: `false` when fenced: `body` did not run and the rows stay for the new owner.
    public func project(
        topic: String, epochs: [Int32: Int64], clearing ids: [Int64], _ body: @Sendable () async throws -> Void
    ) async throws -> Bool {
        let partitions = epochs.keys.sorted()
        return try await client.withTransactionRows(logger: logger) { connection in
            let rows = try await connection.queryRows("""
                SELECT worker_projection_fence(\(consumerGroup), \(topic), \(partitions)::integer[], \(partitions.map { epochs[$0]! })::bigint[])
                """, logger: logger)
            let lost = try rows.first?.decode([Int32].self) ?? []
            guard lost.isEmpty else { return false }
            try await body()
            if !ids.isEmpty {
                try await connection.queryRows("DELETE FROM worker_outbox WHERE id = ANY(\(ids)::bigint[])", logger: logger)
            }
            return true
        }
    }

    /// The outbox rows this group left for `partitions`, in commit order: a claim's new owner re-projects them.
    public func pendingOutbox(topic: String, partitions: [Int32]) async throws -> [PendingOutboxEntry] {
        guard !partitions.isEmpty else { return [] }
        let rows = try await client.queryRows("""
            SELECT id, kafka_partition, stage, payload FROM worker_outbox
            WHERE consumer_group = \(consumerGroup) AND topic = \(topic) AND kafka_partition = ANY(\(partitions)::integer[])
            ORDER BY id
            """, logger: logger)
        return try rows.map { row in
            let (id, partition, stage, payload) = try row.decode((Int64, Int32, String, Data).self)
            return PendingOutboxEntry(id: id, entry: OutboxEntry(stage: stage, partition: partition, payload: Array(payload)))
        }
    }

    /// Every total row of these members in these window periods, as they are now (a recovering projection's input).
    public func totals(members: [String], periods: [PeriodKey]) async throws -> [BatchAggregation.TotalKey: Int64] {
        guard !members.isEmpty, !periods.isEmpty else { return [:] }
        let wanted = Set(periods)
        return try await client.withConnection { connection in
            try await memberTotals(users: members, periods: periods.map(\.period), connection: connection)
        }.filter { wanted.contains(PeriodKey(window: $0.key.window, period: $0.key.period)) }
    }

    private func checkEpochs(_ batch: LedgerBatch, connection: PostgresConnection) async throws {
        let partitions = batch.nextOffsets.keys.sorted()
        let rows = try await connection.queryRows("""
            SELECT kafka_partition, epoch FROM consumer_offsets
            WHERE consumer_group = \(consumerGroup) AND topic = \(batch.topic) AND kafka_partition = ANY(\(partitions)::integer[])
            ORDER BY kafka_partition
            FOR UPDATE
            """, logger: logger)
        var stored: [Int32: Int64] = [:]
        for row in rows {
            let (partition, epoch) = try row.decode((Int32, Int64).self)
            stored[partition] = epoch
        }
        let lost = partitions.filter { stored[$0] != batch.epochs[$0] }
        if !lost.isEmpty { throw LedgerFenced(partitions: lost) }
    }

    private func insertEvents(_ batch: LedgerBatch, connection: PostgresConnection) async throws -> [ScoreEvent] {
        guard !batch.events.isEmpty else { return [] }
        let events = batch.events
        let rows = try await connection.queryRows("""
            INSERT INTO score_events (event_id, user_id, action, points, occurred_at, region, guild, idempotency_key, source,
                                      kafka_partition, kafka_offset)
            SELECT e.id::uuid, e.user_id, e.action, e.points, to_timestamp(e.at / 1000.0), NULLIF(e.region, ''), NULLIF(e.guild, ''),
                   e.idem::uuid, e.source, e.part, e.off
            FROM unnest(\(events.map(\.event.eventID))::text[], \(events.map(\.event.userID))::text[], \(events.map(\.event.action))::text[],
                        \(events.map(\.event.points))::bigint[], \(events.map(\.event.occurredAt.millisecondsSinceEpoch))::bigint[],
                        \(events.map { $0.event.region ?? "" })::text[], \(events.map { $0.event.guild ?? "" })::text[],
                        \(events.map(\.event.idempotencyKey))::text[], \(events.map(\.event.source.rawValue))::text[],
                        \(events.map(\.partition))::integer[], \(events.map(\.offset))::bigint[])
                 AS e(id, user_id, action, points, at, region, guild, idem, source, part, off)
            ON CONFLICT (event_id) DO NOTHING
            RETURNING event_id::text
            """, logger: logger)
        var inserted: Set<String> = []
        for row in rows {
            let id = try row.decode(String.self)
            inserted.insert(id)
        }
        return events.map(\.event).filter { inserted.contains($0.eventID) }
    }

    /// Adds the batch's points and returns every row of each (member, window, period) touched, as the board
    /// projection needs all of a member's rows (see ``BatchAggregation/boardScores(totals:catalog:)``).
    private func addTotals(_ aggregation: BatchAggregation, connection: PostgresConnection) async throws -> [BatchAggregation.TotalKey: Int64] {
        guard !aggregation.pointsByTotal.isEmpty else { return [:] }
        // Sorted, so concurrent transactions lock rows in one order and cannot deadlock.
        let entries = aggregation.pointsByTotal.sorted { lhs, rhs in
            (lhs.key.window.rawValue, lhs.key.period, lhs.key.userID, lhs.key.region ?? "", lhs.key.guild ?? "")
                < (rhs.key.window.rawValue, rhs.key.period, rhs.key.userID, rhs.key.region ?? "", rhs.key.guild ?? "")
        }
        try await connection.queryRows("""
            INSERT INTO member_totals (board_window, period, user_id, region, guild, points)
            SELECT * FROM unnest(\(entries.map(\.key.window.rawValue))::text[], \(entries.map(\.key.period))::text[],
                                 \(entries.map(\.key.userID))::text[], \(entries.map { $0.key.region ?? "" })::text[],
                                 \(entries.map { $0.key.guild ?? "" })::text[], \(entries.map(\.value))::bigint[])
            ON CONFLICT (board_window, period, user_id, region, guild)
            DO UPDATE SET points = member_totals.points + EXCLUDED.points, updated_at = now()
            """, logger: logger)
        // Read back by user and period with `= ANY` (a bitmap scan of the user index), then keep the touched
        // (member, window, period) triples. A join against `unnest` of the triples looked equivalent but the
        // planner, estimating 100 rows for `unnest`, picked a nested loop that took 7-10 s per batch of 5,000
        // events at 40k rows (`scoreboard bench worker`, docs/benchmarks.md).
        let touched = Set(entries.map { TouchedTotal(userID: $0.key.userID, window: $0.key.window, period: $0.key.period) })
        return try await memberTotals(users: entries.map(\.key.userID), periods: entries.map(\.key.period), connection: connection)
            .filter { key, _ in touched.contains(TouchedTotal(userID: key.userID, window: key.window, period: key.period)) }
    }

    /// Every total row of these users in these periods (any window): `user_id = ANY` and `period = ANY`, the shape the
    /// user index answers.
    private func memberTotals(users: [String], periods: [String], connection: PostgresConnection) async throws -> [BatchAggregation.TotalKey: Int64] {
        let rows = try await connection.queryRows("""
            SELECT board_window, period, user_id, region, guild, points FROM member_totals
            WHERE user_id = ANY(\(Array(Set(users)).sorted())::text[]) AND period = ANY(\(Array(Set(periods)).sorted())::text[])
            """, logger: logger)
        return try Self.decodeTotals(rows)
    }

    struct TouchedTotal: Hashable {
        var userID: String
        var window: LeaderboardWindow
        var period: String
    }

    static func decodeTotals(_ rows: [PostgresRow]) throws -> [BatchAggregation.TotalKey: Int64] {
        var totals: [BatchAggregation.TotalKey: Int64] = [:]
        for row in rows {
            let (window, period, user, region, guild, points) = try row.decode((String, String, String, String, String, Int64).self)
            guard let window = LeaderboardWindow(rawValue: window) else { continue }
            let key = BatchAggregation.TotalKey(
                userID: user, window: window, period: period, region: region.isEmpty ? nil : region, guild: guild.isEmpty ? nil : guild)
            totals[key] = points
        }
        return totals
    }

    private func storeOffsets(_ batch: LedgerBatch, connection: PostgresConnection) async throws {
        let partitions = batch.nextOffsets.keys.sorted()
        // GREATEST: a stored offset never moves back, whatever order batches commit in.
        try await connection.queryRows("""
            UPDATE consumer_offsets o SET next_offset = GREATEST(o.next_offset, n.next), updated_at = now()
            FROM unnest(\(partitions)::integer[], \(partitions.map { batch.nextOffsets[$0]! })::bigint[]) AS n(part, next)
            WHERE o.consumer_group = \(consumerGroup) AND o.topic = \(batch.topic) AND o.kafka_partition = n.part
            """, logger: logger)
    }
}
