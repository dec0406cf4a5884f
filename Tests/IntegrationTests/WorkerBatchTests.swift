import Foundation
import Logging
import PostgresNIO
import ScoreboardCLI
import ScoreboardCore
import ScoreboardDefinitions
@testable import ScoreboardKafka
import ScoreboardPostgres
import ScoreboardRedis
@testable import ScoreboardWorker
import Synchronization
import Testing

/// The worker's batch against the real broker, Redis and PostgreSQL, driven in process: fences, dead letters,
/// catalog prices, and the lock that keeps `scoreboard rebuild` and batches apart.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct WorkerBatchTests {
    static let pipelines = try! PipelineCatalog.load(directory: Repository.root.appendingPathComponent("pipelines"))

    /// A fresh schema, Redis database and topic namespace; dropped afterwards.
    struct Fixture: Sendable {
        let store: PostgresStore
        let ledger: ScoreLedger
        let redis: RedisConnectionPool
        let topics: TopicNames
        let producer: KafkaProducer
        let admin: KafkaAdminClient
        let topicID: String

        func worker() -> ScoreWorker {
            ScoreWorker(
                configuration: .init(consumer: TestEnvironment.consumerConfiguration(group: "unused"), topics: topics),
                catalog: WorkerBatchTests.pipelines.leaderboards, actions: WorkerBatchTests.pipelines.actions,
                ports: .live(ledger: ledger, redis: redis, catalog: WorkerBatchTests.pipelines.leaderboards, producer: producer, admin: admin, topics: topics),
                logger: TestEnvironment.logger)
        }

        func message(_ value: String, offset: Int64, key: String = "u") -> KafkaConsumerMessage {
            KafkaConsumerMessage(
                topic: topics.scoreEvents, partition: 0, offset: offset, key: ArraySlice(key.utf8), value: ArraySlice(value.utf8),
                timestampMilliseconds: nil)
        }

        func event(user: String, action: String, points: Int64, key: UUID = UUID()) throws -> String {
            let event = ScoreEvent(
                eventID: UUID().uuidString.lowercased(), userID: user, action: action, points: points,
                occurredAt: Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000)), region: "eu", guild: nil,
                idempotencyKey: key.uuidString.lowercased(), source: .gameServer)
            return String(decoding: try JSONEncoder().encode(event), as: UTF8.self)
        }

        func deadLetterCount() async throws -> Int {
            let consumer = try KafkaConsumer(
                configuration: TestEnvironment.consumerConfiguration(group: TestEnvironment.uniqueName("dead")), topics: [topics.deadLetter],
                logger: TestEnvironment.logger)
            // Read until a marker this test publishes last: everything before it is what the worker published.
            let markerKey = Array("marker-\(UUID().uuidString)".utf8)
            let marker = KafkaProducerMessage(topic: topics.deadLetter, key: markerKey, value: [])
            _ = try await producer.send(marker)
            let counted: Result<Int, any Error>
            do { counted = .success(try await within(.seconds(30)) {
                var count = 0
                for try await batch in consumer.batches {
                    for message in batch.messages {
                        guard let key = message.key.map(Array.init) else { count += 1; continue }
                        if key == markerKey { return count }
                        // Markers of earlier counts are not dead letters.
                        if !key.starts(with: Array("marker-".utf8)) { count += 1 }
                    }
                }
                return count
            }) } catch { counted = .failure(error) }
            await consumer.close()
            return try counted.get()
        }
    }

    func withFixture<T: Sendable>(_ body: @escaping @Sendable (Fixture) async throws -> T) async throws -> T {
        let id = TestEnvironment.uniqueName("wb").replacingOccurrences(of: "-", with: "_")
        var postgres = TestEnvironment.settings.postgres
        postgres.schema = id
        var redisConfiguration = TestEnvironment.settings.redis
        redisConfiguration.database = 20
        let redis = RedisConnectionPool(configuration: redisConfiguration, logger: TestEnvironment.logger)
        defer { redis.close() }
        let topics = TopicNames(namespace: "\(id).")
        let admin = try TestEnvironment.admin()
        _ = try await admin.createTopics([
            KafkaNewTopic(name: topics.scoreEvents, partitions: 1), KafkaNewTopic(name: topics.leaderboardUpdates, partitions: 1),
            KafkaNewTopic(name: topics.deadLetter, partitions: 1),
        ])
        let producer = try TestEnvironment.producer()
        let store = PostgresStore(configuration: postgres, logger: TestEnvironment.logger)
        do {
            let result = try await store.withRunningClient { store in
                try await store.migrate()
                let topicID = try #require(try await admin.describeTopics([topics.scoreEvents])[topics.scoreEvents]).topicID
                let ledger = ScoreLedger(client: store.client, consumerGroup: "workers", logger: TestEnvironment.logger)
                let fixture = Fixture(store: store, ledger: ledger, redis: redis, topics: topics, producer: producer, admin: admin, topicID: topicID)
                let result = try await body(fixture)
                try await store.client.query("DROP SCHEMA \(unescaped: id) CASCADE")
                return result
            }
            await producer.shutdown()
            try? await admin.deleteTopics([topics.scoreEvents, topics.leaderboardUpdates, topics.deadLetter])
            return result
        } catch {
            await producer.shutdown()
            try? await admin.deleteTopics([topics.scoreEvents, topics.leaderboardUpdates, topics.deadLetter])
            throw error
        }
    }

    /// Bad input: an unreadable message in a batch whose partition another worker has claimed since. The fenced batch
    /// must publish nothing: its dead letter belongs to the batch the new owner commits.
    @Test func aFencedBatchPublishesNoDeadLetters() async throws {
        try await withFixture { fixture in
            let stale = fixture.worker()
            _ = try await stale.assign([KafkaTopicPartition(topic: fixture.topics.scoreEvents, partition: 0)], topic: fixture.topics.scoreEvents)
            // Another worker claims the partition: the first one's epoch is stale now.
            let owner = fixture.worker()
            _ = try await owner.assign([KafkaTopicPartition(topic: fixture.topics.scoreEvents, partition: 0)], topic: fixture.topics.scoreEvents)
            let batch = KafkaConsumerBatch(messages: [fixture.message("{not json", offset: 0)])
            try await stale.process(batch, topic: fixture.topics.scoreEvents)
            #expect(stale.health.snapshot.batches == 0)
            #expect(try await fixture.deadLetterCount() == 0)

            try await owner.process(batch, topic: fixture.topics.scoreEvents)
            #expect(owner.health.snapshot.batches == 1)
            #expect(try await fixture.deadLetterCount() == 1)
        }
    }

    /// Bad input: events written straight to the topic with points the catalog does not give (a million for a quest)
    /// and an action the catalog does not know. The first counts at the catalog's price; the second is a dead letter.
    @Test func pointsComeFromTheCatalogNotFromTheMessage() async throws {
        try await withFixture { fixture in
            let worker = fixture.worker()
            _ = try await worker.assign([KafkaTopicPartition(topic: fixture.topics.scoreEvents, partition: 0)], topic: fixture.topics.scoreEvents)
            let price = try #require(WorkerBatchTests.pipelines.actions.points(for: "complete-quest"))
            let batch = KafkaConsumerBatch(messages: [
                fixture.message(try fixture.event(user: "mallory", action: "complete-quest", points: 1_000_000), offset: 0),
                fixture.message(try fixture.event(user: "mallory", action: "print-money", points: 5), offset: 1),
            ])
            try await worker.process(batch, topic: fixture.topics.scoreEvents)
            let board = BoardKey(window: .allTime, period: "all", dimension: .global, value: nil)
            let score = try await fixture.redis.send(["ZSCORE", board.redisKey, "mallory"]).string
            #expect(score.flatMap(Int64.init) == price)
            #expect(try await fixture.deadLetterCount() == 1)
        }
    }

    /// A rebuild holds batches off while it runs, and waits for the batch in flight to commit before it reads.
    @Test func batchesAndRebuildsTakeTurns() async throws {
        try await withFixture { fixture in
            let ledger = fixture.ledger
            let topic = fixture.topics.scoreEvents
            let claims = try await ledger.claim(topic: topic, topicID: fixture.topicID, partitions: [0])
            func batch(_ offset: Int64, user: String) throws -> LedgerBatch {
                let event = try JSONDecoder().decode(ScoreEvent.self, from: Data(try fixture.event(user: user, action: "complete-quest", points: 10).utf8))
                return LedgerBatch(
                    topic: topic, events: [SourcedEvent(event: event, partition: 0, offset: offset)], nextOffsets: [0: offset + 1],
                    epochs: [0: claims[0].epoch])
            }
            let catalog = WorkerBatchTests.pipelines.leaderboards
            let aggregate: @Sendable ([ScoreEvent]) -> BatchAggregation = { BatchAggregation(events: $0, catalog: catalog) }

            // 1. A batch in flight (inside its transaction, before COMMIT) holds a rebuild off until it commits.
            let inFlight = AsyncStream<Void>.makeStream()
            let release = AsyncStream<Void>.makeStream()
            let applying = Task {
                try await ledger.apply(try batch(0, user: "ann"), aggregate: aggregate) { _, _ in
                    inFlight.continuation.finish()
                    for await _ in release.stream {}
                    return (outbox: [OutboxEntry](), writes: StageWrites.none, due: 0)
                }
            }
            for await _ in inFlight.stream {}
            let rebuildSaw = Task { try await ledger.withBatchesPaused { try await ledger.totals(window: .allTime).count } }
            try await waitForBlockedAdvisoryLocks(1, store: fixture.store)
            release.continuation.finish()
            try await applying.value
            #expect(try await rebuildSaw.value == 1, "the rebuild read after the batch committed")

            // 2. A rebuild in progress holds a new batch off until it ends.
            let paused = AsyncStream<Void>.makeStream()
            let resume = AsyncStream<Void>.makeStream()
            let rebuilding = Task {
                try await ledger.withBatchesPaused {
                    paused.continuation.finish()
                    for await _ in resume.stream {}
                }
            }
            for await _ in paused.stream {}
            let held = Task { try await ledger.apply(try batch(1, user: "bob"), aggregate: aggregate) { _, _ in (outbox: [OutboxEntry](), writes: StageWrites.none, due: 0) } }
            try await waitForBlockedAdvisoryLocks(1, store: fixture.store)
            #expect(try await ledger.totals(window: .allTime).count == 1, "the held batch has written nothing")
            resume.continuation.finish()
            try await rebuilding.value
            try await held.value
            #expect(try await ledger.totals(window: .allTime).count == 2)
        }
    }

    /// Stage state commits with the batch: a value read under lock and replaced, a counter, a set and a record. Two
    /// workers that create the same new key take turns on it (the second reads what the first committed: without the
    /// placeholder row both would read "absent" and one increment would be lost), and a replayed batch, whose events
    /// the ledger drops, leaves all four as they were.
    @Test func stageStateCommitsWithItsBatchAndAReplayChangesNothing() async throws {
        try await withFixture { fixture in
            let ledger = fixture.ledger
            let topic = fixture.topics.scoreEvents
            let claims = try await ledger.claim(topic: topic, topicID: fixture.topicID, partitions: [0, 1])
            // Three players: the two batches must not share a member_totals row, or the second would wait on that lock.
            let events = try ["ann", "bob", "cat"].map { user in
                try JSONDecoder().decode(ScoreEvent.self, from: Data(try fixture.event(user: user, action: "complete-quest", points: 10).utf8))
            }
            func batch(_ partition: Int32, _ events: [ScoreEvent], offset: Int64) -> LedgerBatch {
                LedgerBatch(
                    topic: topic, events: events.enumerated().map { SourcedEvent(event: $1, partition: partition, offset: offset + Int64($0)) },
                    nextOffsets: [partition: offset + Int64(events.count)], epochs: [partition: claims[Int(partition)].epoch])
            }
            let catalog = WorkerBatchTests.pipelines.leaderboards
            let aggregate: @Sendable ([ScoreEvent]) -> BatchAggregation = { BatchAggregation(events: $0, catalog: catalog) }
            let population = StageKey(stage: "test", key: "population")
            let counter = StageKey(stage: "test", key: "events")
            let active = StageKey(stage: "test", key: "active")
            // The test stage: the population value counts the new events it has seen, read then replaced.
            let stage: @Sendable (LedgerApplied, StageState) -> StageWrites = { applied, state in
                guard !applied.newEvents.isEmpty else { return .none }
                let seen = state[population].map { Int(String(decoding: $0, as: UTF8.self))! } ?? 0
                return StageWrites(
                    state: [population: Array(String(seen + applied.newEvents.count).utf8)],
                    counters: [counter: Int64(applied.newEvents.count)],
                    members: Set(applied.newEvents.map { StageSetMember(set: active, member: $0.userID) }),
                    records: applied.newEvents.map {
                        StageRecord(
                            key: StageKey(stage: "test", key: $0.eventID), userID: $0.userID, occurredAt: $0.occurredAt,
                            payload: Array(#"{"points": \#($0.points)}"#.utf8))
                    })
            }
            let readPopulation: @Sendable (LedgerApplied) -> StageReads = { _ in StageReads(state: [population]) }

            // Partition 0's batch holds its lock on the new key; partition 1's waits for it, then reads its value.
            let inFlight = AsyncStream<Void>.makeStream()
            let release = AsyncStream<Void>.makeStream()
            let first = Task {
                try await ledger.apply(batch(0, Array(events[0...1]), offset: 0), aggregate: aggregate, reads: readPopulation) { applied, state in
                    inFlight.continuation.finish()
                    for await _ in release.stream {}
                    return (outbox: [OutboxEntry](), writes: stage(applied, state), due: 0)
                }
            }
            for await _ in inFlight.stream {}
            let second = Task {
                try await ledger.apply(batch(1, [events[2]], offset: 0), aggregate: aggregate, reads: readPopulation) { applied, state in
                    (outbox: [OutboxEntry](), writes: stage(applied, state), due: 0)
                }
            }
            try await within(.seconds(20)) {
                while true {
                    let rows = try await fixture.store.client.query(
                        "SELECT count(*)::bigint FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%stage_state%'")
                    for try await waiting in rows.decode(Int64.self) where waiting >= 1 { return }
                    try await Task.sleep(for: .milliseconds(20))
                }
            }
            release.continuation.finish()
            _ = try await first.value
            _ = try await second.value

            func observed() async throws -> (String?, Int64?, Int?, Int) {
                let value = try await ledger.stageState([population])[population].map { String(decoding: $0, as: UTF8.self) }
                let count = try await ledger.stageCounters([counter])[counter]
                let size = try await ledger.stageSetSizes([active])[active]
                let records = try await ledger.stageRecords(stage: "test").count
                return (value, count, size, records)
            }
            let committed = try await observed()
            #expect(committed.0 == "3")
            #expect(committed.1 == 3)
            #expect(committed.2 == 3, "ann, bob and cat")
            #expect(committed.3 == 3)
            let annRecords = try await ledger.stageRecords(stage: "test", userID: "ann")
            #expect(annRecords.map(\.key.key) == [events[0].eventID])
            #expect(annRecords.allSatisfy { String(decoding: $0.payload, as: UTF8.self).contains("10") })

            // The replay: partition 0's batch again (as after a crash before the offsets were read back).
            _ = try await ledger.apply(batch(0, Array(events[0...1]), offset: 0), aggregate: aggregate, reads: readPopulation) { applied, state in
                (outbox: [OutboxEntry](), writes: stage(applied, state), due: 0)
            }
            let replayed = try await observed()
            #expect(replayed.0 == committed.0 && replayed.1 == committed.1 && replayed.2 == committed.2 && replayed.3 == committed.3)
        }
    }

    /// The fault: a worker stops between its batch's commit and its outputs. Against the real servers, the next owner's
    /// claim finds the outbox rows and raises the Redis board to the committed total; the stopped worker's own late
    /// projection is fenced.
    @Test func aCrashBetweenCommitAndOutputsConvergesAtTheNextClaim() async throws {
        try await withFixture { fixture in
            let topic = fixture.topics.scoreEvents
            let stopped = fixture.worker()
            _ = try await stopped.assign([KafkaTopicPartition(topic: topic, partition: 0)], topic: topic)
            // Redis database 20 outlives the run: a name of its own.
            let ann = "ann-\(UUID().uuidString.prefix(8))"
            let batch = KafkaConsumerBatch(messages: [
                fixture.message(try fixture.event(user: ann, action: "complete-quest", points: 10), offset: 0),
                fixture.message(try fixture.event(user: ann, action: "complete-quest", points: 10), offset: 1),
            ])
            let committed = try #require(try await stopped.commit(stopped.decode(batch, topic: topic), topic: topic))
            #expect(try await fixture.ledger.pendingOutbox(topic: topic, partitions: [0]).count == 1)
            let board = BoardKey(window: .allTime, period: "all", dimension: .global, value: nil)
            #expect(try await fixture.redis.send(["ZSCORE", board.redisKey, ann]).string == nil)

            let next = fixture.worker()
            _ = try await next.assign([KafkaTopicPartition(topic: topic, partition: 0)], topic: topic)
            let price = try #require(WorkerBatchTests.pipelines.actions.points(for: "complete-quest"))
            #expect(try await fixture.redis.send(["ZSCORE", board.redisKey, ann]).string.flatMap(Int64.init) == 2 * price)
            #expect(try await fixture.ledger.pendingOutbox(topic: topic, partitions: [0]).isEmpty)
            #expect(try await stopped.project(committed, topic: topic) == false)
        }
    }

    /// A projection in flight holds a claim of its partition off until it ends; one that starts after the claim sees
    /// the new epoch and runs nothing.
    @Test func projectionsAndClaimsTakeTurns() async throws {
        try await withFixture { fixture in
            let ledger = fixture.ledger
            let topic = fixture.topics.scoreEvents
            let first = try await ledger.claim(topic: topic, topicID: fixture.topicID, partitions: [0])
            let inFlight = AsyncStream<Void>.makeStream()
            let release = AsyncStream<Void>.makeStream()
            let projecting = Task {
                try await ledger.project(topic: topic, epochs: [0: first[0].epoch], clearing: []) {
                    inFlight.continuation.finish()
                    for await _ in release.stream {}
                }
            }
            for await _ in inFlight.stream {}
            let claiming = Task { try await ledger.claim(topic: topic, topicID: fixture.topicID, partitions: [0]) }
            try await waitForBlockedAdvisoryLocks(1, store: fixture.store)
            release.continuation.finish()
            #expect(try await projecting.value)
            let second = try await claiming.value
            #expect(second[0].epoch == first[0].epoch + 1)
            let ran = Mutex(false)
            #expect(try await ledger.project(topic: topic, epochs: [0: first[0].epoch], clearing: []) { ran.withLock { $0 = true } } == false)
            #expect(ran.withLock { $0 } == false)
            #expect(try await ledger.project(topic: topic, epochs: [0: second[0].epoch], clearing: []) { ran.withLock { $0 = true } })
            #expect(ran.withLock { $0 })
        }
    }

    /// Waits until `count` sessions wait for an advisory lock (the observable sign that one side holds the other off).
    func waitForBlockedAdvisoryLocks(_ count: Int, store: PostgresStore) async throws {
        try await within(.seconds(20)) {
            while true {
                let rows = try await store.client.query("SELECT count(*)::bigint FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
                for try await waiting in rows.decode(Int64.self) where waiting >= count { return }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
    }
}
