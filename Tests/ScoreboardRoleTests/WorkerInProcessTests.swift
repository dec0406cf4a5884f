import Foundation
import Logging
import ScoreboardCore
import ScoreboardDefinitions
@testable import ScoreboardKafka
import ScoreboardRedis
@testable import ScoreboardWorker
import Testing

/// The worker's batch logic against memory ports that fail on cue: each fault costs milliseconds, no server.
@Suite struct WorkerInProcessTests {
    static let pipelines = try! PipelineCatalog.load(
        directory: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("pipelines"))
    static let topic = "score-events"

    struct Harness {
        let ledger = MemoryWorkerLedger()
        let boards = MemoryBoardStore(topN: WorkerInProcessTests.pipelines.leaderboards.topN)
        let outputs = MemoryWorkerOutputs()
        let topics = MemoryTopicIncarnations([WorkerInProcessTests.topic: "incarnation-1"])
        let worker: ScoreWorker

        init() {
            var configuration = ScoreWorker.Configuration(
                consumer: KafkaConsumerConfiguration(client: KafkaClientConfiguration(bootstrapServers: ["unused:1"]), groupID: "g"),
                topics: TopicNames())
            configuration.retry = RetryBackoff(initial: .milliseconds(1), maximum: .milliseconds(2))
            worker = ScoreWorker(
                configuration: configuration, catalog: WorkerInProcessTests.pipelines.leaderboards, actions: WorkerInProcessTests.pipelines.actions,
                ports: WorkerPorts(ledger: ledger, boards: boards, outputs: outputs, topics: topics), logger: Logger(label: "test"))
        }

        func claim() async throws {
            _ = try await worker.assign([KafkaTopicPartition(topic: WorkerInProcessTests.topic, partition: 0)], topic: WorkerInProcessTests.topic)
        }

        /// The totals published for a board, in order, whichever schema version carried them.
        func publishedTotals(on board: String) -> [Int64] {
            (outputs.updates + outputs.boardChanges.flatMap(\.memberUpdates)).filter { $0.board == board }.map(\.total)
        }

        func globalAllTime() -> [String: Int64] {
            boards.snapshot[BoardKey(window: .allTime, period: "all", dimension: .global, value: nil)] ?? [:]
        }
    }

    static func batch(_ events: [(user: String, action: String, points: Int64)], from offset: Int64 = 0, raw: [String] = []) throws -> KafkaConsumerBatch {
        let encoder = JSONEncoder()
        var messages: [KafkaConsumerMessage] = []
        for (index, spec) in events.enumerated() {
            let event = ScoreEvent(
                eventID: UUID().uuidString.lowercased(), userID: spec.user, action: spec.action, points: spec.points,
                occurredAt: Timestamp(millisecondsSinceEpoch: 1_764_000_000_000), region: "eu", guild: "dragons",
                idempotencyKey: UUID().uuidString.lowercased(), source: .gameServer)
            messages.append(KafkaConsumerMessage(
                topic: topic, partition: 0, offset: offset + Int64(index), key: ArraySlice(spec.user.utf8),
                value: ArraySlice(try encoder.encode(event)), timestampMilliseconds: nil))
        }
        for (index, text) in raw.enumerated() {
            messages.append(KafkaConsumerMessage(
                topic: topic, partition: 0, offset: offset + Int64(events.count + index), key: nil, value: ArraySlice(text.utf8),
                timestampMilliseconds: nil))
        }
        return KafkaConsumerBatch(messages: messages)
    }

    var quest: Int64 { Self.pipelines.actions.points(for: "complete-quest")! }

    @Test func aBatchIsRetriedWhileTheBoardStoreIsDownAndCountsOnce() async throws {
        let harness = Harness()
        try await harness.claim()
        harness.boards.failNextWrites(3, with: RedisError(code: .connection, reason: "Connection refused"))
        await harness.worker.applyUntilDone(try Self.batch([("ann", "complete-quest", 10), ("bob", "complete-quest", 10), ("ann", "complete-quest", 10)]),
                                            topic: Self.topic)
        #expect(harness.ledger.snapshot.commits == 1)
        #expect(harness.ledger.snapshot.offsets[Self.topic]?[0] == 3)
        #expect(harness.globalAllTime() == ["ann": 2 * quest, "bob": quest])
        #expect(harness.worker.health.snapshot.outage == nil, "the outage ended with the commit")
        #expect(harness.worker.health.snapshot.batches == 1)
    }

    @Test func whileTheLedgerFailsReadinessNamesItThenRecovers() async throws {
        struct ConnectionClosed: Error {}
        let harness = Harness()
        try await harness.claim()
        harness.ledger.failNextApplies(50, with: ConnectionClosed())
        let applying = Task { await harness.worker.applyUntilDone(try Self.batch([("ann", "complete-quest", 10)]), topic: Self.topic) }
        while harness.worker.health.snapshot.outage == nil { await Task.yield() }
        #expect(harness.worker.health.readinessProblems().keys.contains("postgres"))
        try await applying.value
        #expect(harness.worker.health.readinessProblems().isEmpty)
        #expect(harness.ledger.snapshot.commits == 1)
    }

    /// A failure after the boards were written (the update publish) rolls the batch back; the retry writes the same
    /// absolute totals again, so nothing doubles.
    @Test func aRetryAfterAFailedPublishConvergesWithoutDoubling() async throws {
        let harness = Harness()
        try await harness.claim()
        harness.outputs.failNextPublishes(2, with: KafkaError(code: .messageDelivery, reason: "Message timed out"))
        await harness.worker.applyUntilDone(try Self.batch([("ann", "complete-quest", 10)]), topic: Self.topic)
        await harness.worker.applyUntilDone(try Self.batch([("ann", "complete-quest", 10)], from: 1), topic: Self.topic)
        #expect(harness.globalAllTime() == ["ann": 2 * quest])
        #expect(harness.ledger.snapshot.commits == 2)
        #expect(harness.publishedTotals(on: "all-time:all:global") == [quest, 2 * quest])
    }

    /// Bad input: a message that is not JSON, an action the catalog does not know, points the catalog does not give.
    @Test func unreadableMessagesBecomeDeadLettersAndPointsComeFromTheCatalog() async throws {
        let harness = Harness()
        try await harness.claim()
        await harness.worker.applyUntilDone(
            try Self.batch([("mallory", "complete-quest", 1_000_000), ("mallory", "print-money", 5)], raw: ["{not json"]), topic: Self.topic)
        #expect(harness.globalAllTime() == ["mallory": quest])
        #expect(harness.outputs.deadLetters.map(\.sourceOffset) == [1, 2])
        #expect(harness.ledger.snapshot.offsets[Self.topic]?[0] == 3, "the offsets move past the dead letters")
    }

    @Test func aFencedBatchChangesNothingAndPublishesNothing() async throws {
        let harness = Harness()
        try await harness.claim()
        // Another worker claims the partition.
        _ = try await harness.ledger.claim(topic: Self.topic, topicID: "incarnation-1", partitions: [0])
        await harness.worker.applyUntilDone(try Self.batch([("ann", "complete-quest", 10)], raw: ["junk"]), topic: Self.topic)
        #expect(harness.ledger.snapshot.commits == 0)
        #expect(harness.boards.snapshot.isEmpty)
        #expect(harness.outputs.updates.isEmpty && harness.outputs.boardChanges.isEmpty && harness.outputs.deadLetters.isEmpty)
    }

    @Test func aMissingTopicKeepsTheAssignmentWaitingAndSaysWhy() async throws {
        let harness = Harness()
        harness.topics.set(Self.topic, id: nil)
        let assigning = Task { try await harness.claim() }
        while harness.worker.health.snapshot.assignmentProblem == nil { await Task.yield() }
        #expect(harness.worker.health.readinessProblems()["assignment"]?.contains("topics apply") == true)
        harness.topics.set(Self.topic, id: "incarnation-2")
        try await assigning.value
        #expect(harness.worker.health.readinessProblems().isEmpty)
        #expect(harness.worker.health.snapshot.assignedPartitions == [0])
    }
}

extension WorkerInProcessTests {
    /// An idle worker (no batch trying the servers) still says which one is down, and stops saying it once it answers.
    @Test func probesBetweenBatchesNameAStoreThatIsDown() async throws {
        struct ConnectionRefused: Error {}
        let harness = Harness()
        await harness.worker.probeDependencies()
        #expect(harness.worker.health.readinessProblems().isEmpty)
        harness.boards.failNextWrites(1, with: RedisError(code: .connection, reason: "Connection refused"))
        harness.ledger.failNextApplies(1, with: ConnectionRefused())
        await harness.worker.probeDependencies()
        #expect(harness.worker.health.readinessProblems() == ["redis": "unreachable", "postgres": "unreachable"])
        // The scheduled failures are used up by the next batch; then the probes pass again.
        try await harness.claim()
        await harness.worker.applyUntilDone(try Self.batch([("ann", "complete-quest", 10)]), topic: Self.topic)
        await harness.worker.probeDependencies()
        #expect(harness.worker.health.readinessProblems().isEmpty)
    }
}

extension WorkerInProcessTests {
    /// What the monitor does after a broker restart, from two successive looks at the topic. The bad inputs are the
    /// states a restart leaves behind: partitions claimed on the old incarnation, and a group assigned nothing while the
    /// topic was missing; the quiet cases are a worker beyond the partition count and a check that learnt nothing new.
    @Test func theIncarnationCheckReclaimsOrRejoinsOnlyWhenTheTopicChanged() {
        typealias Observation = ScoreWorker.TopicObservation
        func repair(_ previous: Observation?, _ current: Observation, claimed: String? = nil, owns: Bool = false) -> ScoreWorker.IncarnationRepair {
            ScoreWorker.incarnationRepair(previous: previous, current: current, claimedID: claimed, ownsPartitions: owns)
        }
        // Owned partitions claimed on the old log: claimed again, whatever the previous check saw.
        #expect(repair(.incarnation("t1"), .incarnation("t2"), claimed: "t1", owns: true) == .reclaim(topicID: "t2"))
        #expect(repair(nil, .incarnation("t2"), claimed: "t1", owns: true) == .reclaim(topicID: "t2"))
        // Already claimed on the new log (the group rebalanced by itself): nothing to do.
        #expect(repair(.missing, .incarnation("t2"), claimed: "t2", owns: true) == .none)
        // Owning nothing while the topic came back or changed: the assignment may predate it, so rejoin.
        #expect(repair(.missing, .incarnation("t2")) == .rejoin(topicID: "t2"))
        #expect(repair(.incarnation("t1"), .incarnation("t2")) == .rejoin(topicID: "t2"))
        // Owning nothing on an unchanged topic is a worker beyond the partition count: no rebalance at every check.
        #expect(repair(.incarnation("t2"), .incarnation("t2")) == .none)
        #expect(repair(nil, .incarnation("t2")) == .none)
        // The topic is missing (`topics apply` has not run yet): nothing can be claimed or assigned.
        #expect(repair(.incarnation("t1"), .missing, claimed: "t1", owns: true) == .none)
        #expect(repair(.incarnation("t1"), .missing) == .none)
    }
}
