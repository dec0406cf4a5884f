import Foundation
import PostgresNIO
import ScoreboardCore
import ScoreboardDefinitions
import ScoreboardPostgres
import ScoreboardRedis
import Synchronization
@testable import ScoreboardCLI
import Testing

/// Fraud review against the real PostgreSQL and Redis: a confirmed flag bans its user and publishes the ban, whose
/// batch in the ledger deletes their totals once (a replay deletes nothing, their later events are stored and not
/// counted) and takes them off every board in both stores (the others re-ranked); the review is audited once and
/// cannot be made again; a dismissed flag reopens its
/// rule in the user's profile and ends the adaptive limit; the audit log refuses changes.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct FraudReviewPostgresTests {
    static let pipelines = try! PipelineCatalog.load(directory: Repository.root.appendingPathComponent("pipelines"))

    static func event(_ user: String, points: Int64, region: String) -> ScoreEvent {
        ScoreEvent(
            eventID: UUID().uuidString.lowercased(), userID: user, action: "complete-quest", points: points,
            occurredAt: Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000)), region: region, guild: "dragons",
            idempotencyKey: UUID().uuidString.lowercased(), source: .gameServer)
    }

    static func flag(_ user: String, rule: String) -> FraudFlagMessage {
        FraudFlagMessage(
            userID: user, ruleID: rule, severity: .high, outcome: .flag, detectedAt: Int64(Date().timeIntervalSince1970 * 1000),
            triggeredBy: UUID().uuidString.lowercased(), evidence: ["actions": 9], detail: "9 actions in 8 s")
    }

    @Test func aConfirmedFlagBansAndRemovesTheUserFromEveryBoardAndADismissReopensTheRule() async throws {
        try await withFreshPostgresStore(prefix: "fraud") { store in
            try await store.migrate()
            let ledger = ScoreLedger(client: store.client, consumerGroup: "workers", logger: TestEnvironment.logger)
            var redisConfiguration = TestEnvironment.settings.redis
            redisConfiguration.database = 25
            let redis = RedisConnectionPool(configuration: redisConfiguration, logger: TestEnvironment.logger)
            defer { redis.close() }
            let catalog = Self.pipelines.leaderboards
            let tag = UUID().uuidString.prefix(8).lowercased()
            let (mallory, ann, bob) = ("mallory-\(tag)", "ann-\(tag)", "bob-\(tag)")
            let confirmed = Self.flag(mallory, rule: "rapid-actions"), dismissed = Self.flag(ann, rule: "regular-intervals")

            // What the workers leave: totals (mallory first on every board), the boards in Redis, the flags as fraud
            // records, ann's profile with the rule raised, both flags marked open.
            let topic = "fraud-review-\(tag)"
            let claim = try await ledger.claim(topic: topic, topicID: "incarnation-1", partitions: [0])[0]
            let events = [Self.event(mallory, points: 500, region: "eu"), Self.event(ann, points: 300, region: "eu"), Self.event(bob, points: 100, region: "us")]
            var profile = FraudUserProfile()
            profile.raisedRules = ["regular-intervals"]
            let profileBytes = Array(try JSONEncoder().encode(profile))
            let records = try [confirmed, dismissed].map { flag in
                StageRecord(
                    key: StageKey(stage: "fraud", key: flag.flagID), userID: flag.userID, occurredAt: Timestamp(millisecondsSinceEpoch: flag.detectedAt),
                    payload: Array(try JSONEncoder().encode(flag)))
            }
            let applied = try await ledger.apply(
                LedgerBatch(
                    topic: topic, events: events.enumerated().map { SourcedEvent(event: $1, partition: 0, offset: Int64($0)) },
                    nextOffsets: [0: 3], epochs: [0: claim.epoch]),
                aggregate: { BatchAggregation(events: $0, catalog: catalog) }, reads: { _ in .none }
            ) { applied, _ in
                (outbox: [OutboxEntry](), writes: StageWrites(state: [StageKey(stage: "fraud", key: "user:\(ann)"): profileBytes], records: records),
                 due: applied.totals)
            }
            let boards = BatchAggregation.boardScores(totals: applied.due, catalog: catalog)
            _ = try await RedisBoardStore(redis: redis, catalog: catalog).raiseScores(boards)
            let marks = RedisFraudMarks(redis: redis)
            try await marks.markOpen([confirmed, dismissed])
            let malloryBoards = boards.filter { $0.value[mallory] != nil }.keys
            #expect(malloryBoards.count >= 4, "global and eu boards of several windows")

            let published = Mutex<[UserBanned]>([])
            let reviews = PostgresRedisFraudReviews(ledger: ledger, redis: redis, publishBan: { ban in published.withLock { $0.append(ban) } })
            let now = Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000))
            await #expect(throws: FraudReviewRefusal.unknownFlag) {
                try await reviews.review(flagID: UUID().uuidString.lowercased(), decision: .confirm, note: "", reviewer: "root", at: now)
            }
            // A broker that does not take the ban fails the review: nothing recorded, the flag still open.
            let brokerDown = PostgresRedisFraudReviews(ledger: ledger, redis: redis, publishBan: { _ in throw CancellationError() })
            await #expect(throws: CancellationError.self) {
                try await brokerDown.review(flagID: confirmed.flagID, decision: .confirm, note: "a bot", reviewer: "root", at: now)
            }
            #expect(try await reviews.flags(FraudFlagQuery(userID: mallory)).map(\.status) == [.open])
            #expect(try await ledger.isBanned(userID: mallory) == false)

            let reviewed = try await reviews.review(flagID: confirmed.flagID, decision: .confirm, note: "a bot", reviewer: "root", at: now)
            #expect(reviewed.status == .confirmed && reviewed.review?.reviewer == "root")
            // The review bans (fraud_bans, the gateway's mark) and publishes the ban; the totals are the worker's to
            // delete, in order with the user's events.
            let ban = UserBanned(userID: mallory, flagID: confirmed.flagID, bannedAt: now.millisecondsSinceEpoch)
            #expect(published.withLock { $0 } == [ban])
            #expect(try await ledger.isBanned(userID: mallory))
            let allTime = BoardKey(window: .allTime, period: "all", dimension: .global, value: nil)
            #expect(try await ledger.page(of: allTime, offset: 0, limit: 10).entries.first?.userID == mallory, "until the worker applies the ban")

            // The worker's batch with the ban, and one of mallory's events behind it; then the same batch again (a
            // replay): her totals are deleted once, her event is stored and not counted, the replay changes nothing.
            let late = Self.event(mallory, points: 40, region: "eu")
            let banBatch = LedgerBatch(
                topic: topic, events: [SourcedEvent(event: late, partition: 0, offset: 4)], nextOffsets: [0: 5], epochs: [0: claim.epoch],
                bans: [SourcedBan(ban: ban, partition: 0, offset: 3)])
            let first = try await ledger.apply(banBatch, aggregate: { BatchAggregation(events: $0, catalog: catalog) }) { applied, _ in
                (outbox: [OutboxEntry](), writes: StageWrites.none, due: applied)
            }.due
            #expect(first.newEvents.isEmpty && first.totals.isEmpty && first.banPartitions == [mallory: 0])
            #expect(Set(first.removedTotals.keys.map(\.userID)) == [mallory] && first.removedTotals.values.allSatisfy { $0 == 500 })
            let replayed = try await ledger.apply(banBatch, aggregate: { BatchAggregation(events: $0, catalog: catalog) }) { applied, _ in
                (outbox: [OutboxEntry](), writes: StageWrites.none, due: applied)
            }.due
            #expect(replayed.newEvents.isEmpty && replayed.removedTotals.isEmpty)
            #expect(try await ledger.recentEvents(userID: mallory, limit: 10).contains { $0.eventID == late.eventID }, "stored as evidence")
            // What the worker's outputs then do to Redis (LeaderboardStage).
            let removed = BatchAggregation.boardScores(totals: first.removedTotals, catalog: catalog).mapValues { Array($0.keys) }
            #expect(Set(removed.keys) == Set(malloryBoards))
            try await RedisBoardStore(redis: redis, catalog: catalog).removeMembers(removed)

            // Off every board, in Redis and in the stored standings; the others move up.
            for board in malloryBoards {
                #expect(try await redis.send(["ZSCORE", board.redisKey, mallory]).isNull, "\(board.id) in Redis")
                let standings = try await ledger.page(of: board, offset: 0, limit: 10)
                #expect(!standings.entries.contains { $0.userID == mallory }, "\(board.id) in PostgreSQL")
                if board.dimension == .global {
                    #expect(standings.entries.first?.userID == ann && standings.entries.first?.rank == 1, "\(board.id) re-ranked")
                }
            }
            #expect(try await RedisIngestState(redis: redis).precheck([IngestKey(userID: mallory, idempotencyKey: UUID().uuidString)])[0].banned)
            #expect(try await marks.isFlagged(userID: mallory) == false)
            await #expect(throws: FraudReviewRefusal.alreadyReviewed(.confirmed)) {
                try await reviews.review(flagID: confirmed.flagID, decision: .dismiss, note: "", reviewer: "root", at: now)
            }

            _ = try await reviews.review(flagID: dismissed.flagID, decision: .dismiss, note: "a fast player", reviewer: "root", at: now)
            #expect(try await marks.isFlagged(userID: ann) == false, "the adaptive limit ends")
            let stored = try #require(try await ledger.stageState([StageKey(stage: "fraud", key: "user:\(ann)")]).values.first)
            #expect(try JSONDecoder().decode(FraudUserProfile.self, from: Data(stored)).raisedRules.isEmpty, "the rule may fire again")
            #expect(try await ledger.page(of: BoardKey(window: .allTime, period: "all", dimension: .global, value: nil), offset: 0, limit: 10)
                .entries.contains { $0.userID == ann }, "a dismissal removes no one")

            let audit = try await reviews.audit(userID: nil, from: nil, to: nil, limit: 10)
            #expect(audit.map(\.action) == ["review-confirm", "review-dismiss"])
            #expect(audit.map(\.flagID) == [confirmed.flagID, dismissed.flagID] && audit.first?.note == "a bot")
            let listed = try await reviews.flags(FraudFlagQuery(status: .open))
            #expect(listed.isEmpty)
            #expect(try await reviews.flags(FraudFlagQuery(userID: mallory)).map(\.status) == [.confirmed])
            // Append-only: the database refuses to change or remove an entry.
            await #expect(throws: (any Error).self) { try await store.client.query("DELETE FROM fraud_audit") }
            await #expect(throws: (any Error).self) { try await store.client.query("UPDATE fraud_audit SET actor = 'someone'") }
            #expect(try await reviews.audit(userID: mallory, from: nil, to: nil, limit: 10).count == 1)
        }
    }
}
