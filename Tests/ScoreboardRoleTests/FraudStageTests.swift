import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import ScoreboardHTTP
import ScoreboardCore
import ScoreboardDefinitions
@testable import ScoreboardKafka
@testable import ScoreboardWorker
import Testing

/// The fraud stage in the worker, in process: profiles and flags commit with the batch, a flag is one record under a
/// deterministic id however often its batch is replayed, and its outputs (topic, open mark) follow the commit, from the
/// outbox when the worker stopped in between.
@Suite struct FraudStageTests {
    static let topic = WorkerInProcessTests.topic
    static let rules = try! PipelineCatalog.loadFraudRules(
        directory: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("pipelines"))

    struct Harness {
        let ledger = MemoryWorkerLedger()
        let boards = MemoryBoardStore(topN: WorkerInProcessTests.pipelines.leaderboards.topN)
        let outputs = MemoryWorkerOutputs()
        let flags = MemoryFraudFlagOutputs()
        let topics = MemoryTopicIncarnations([FraudStageTests.topic: "incarnation-1"])

        /// A worker on these ports (a second call: the restarted process, or the partition's next owner).
        func worker() -> ScoreWorker {
            var configuration = ScoreWorker.Configuration(
                consumer: KafkaConsumerConfiguration(client: KafkaClientConfiguration(bootstrapServers: ["unused:1"]), groupID: "g"),
                topics: TopicNames())
            configuration.retry = RetryBackoff(initial: .milliseconds(1), maximum: .milliseconds(2))
            configuration.fraudRules = FraudStageTests.rules
            return ScoreWorker(
                configuration: configuration, catalog: WorkerInProcessTests.pipelines.leaderboards, actions: WorkerInProcessTests.pipelines.actions,
                ports: WorkerPorts(ledger: ledger, boards: boards, outputs: outputs, topics: topics, fraudFlags: flags), logger: Logger(label: "test"))
        }

        func claim(_ worker: ScoreWorker) async throws {
            _ = try await worker.assign([KafkaTopicPartition(topic: FraudStageTests.topic, partition: 0)], topic: FraudStageTests.topic)
        }

        var flagRecords: [StageRecord] { ledger.snapshot.records.values.filter { $0.key.stage == "fraud" }.sorted { $0.key < $1.key } }
    }

    /// `count` actions of `user`, `gapMilliseconds` apart from `start`, with fixed event ids (a replay sends the same ones).
    static func events(_ user: String, count: Int, start: Int64 = 1_764_000_000_000, gapMilliseconds: Int64) -> [ScoreEvent] {
        (0..<count).map { index in
            ScoreEvent(
                eventID: String(format: "00000000-0000-4000-8000-%012d", user.utf8.reduce(0) { $0 + Int($1) } * 10_000 + index),
                userID: user, action: "complete-quest", points: 0, occurredAt: Timestamp(millisecondsSinceEpoch: start + Int64(index) * gapMilliseconds),
                region: "eu", guild: "dragons", idempotencyKey: String(format: "00000000-0000-4000-8000-%012d", index), source: .gameServer)
        }
    }

    static func batch(_ events: [ScoreEvent], from offset: Int64 = 0) throws -> KafkaConsumerBatch {
        let encoder = JSONEncoder()
        return KafkaConsumerBatch(messages: try events.enumerated().map { index, event in
            KafkaConsumerMessage(
                topic: topic, partition: 0, offset: offset + Int64(index), key: ArraySlice(event.userID.utf8),
                value: ArraySlice(try encoder.encode(event)), timestampMilliseconds: nil)
        })
    }

    /// Nine actions in 8 s is more than 8 in 10 s: one rapid-actions flag, stored, published and marked open; a user
    /// at a human pace raises none. The profile is stored with the batch.
    @Test func aBurstRaisesOneFlagStoredPublishedAndMarkedOpen() async throws {
        let harness = Harness()
        let worker = harness.worker()
        try await harness.claim(worker)
        let burst = Self.events("mallory", count: 9, gapMilliseconds: 1_000)
        let calm = Self.events("ann", count: 9, gapMilliseconds: 60_000)
        await worker.applyUntilDone(try Self.batch(burst + calm), topic: Self.topic)

        let records = harness.flagRecords
        #expect(records.count == 1)
        let stored = try JSONDecoder().decode(FraudFlagMessage.self, from: Data(try #require(records.first).payload))
        #expect(stored.userID == "mallory" && stored.ruleID == "rapid-actions" && stored.triggeredBy == burst[8].eventID)
        #expect(stored.flagID == FraudFlagMessage.flagID(userID: "mallory", ruleID: "rapid-actions", triggeredBy: burst[8].eventID))
        #expect(stored.evidence["actions"] == 9 && stored.evidence["seconds"] == 8)
        #expect(harness.flags.published == [stored])
        #expect(harness.flags.flaggedUsers == ["mallory"])
        #expect(harness.ledger.snapshot.stageState[FraudStage.userKey("ann")] != nil, "every observed user's profile is kept")
        #expect(harness.ledger.snapshot.outbox.isEmpty, "outputs done, outbox cleared")
    }

    /// The fault: the worker stops between the commit and the outputs (as under SIGKILL), and the batch is delivered
    /// again to the restarted worker (offsets read back before the stop). The next owner publishes the flag from the
    /// outbox, once; the replayed batch raises no second flag, publishes nothing and leaves the profiles as they were.
    @Test func aReplayAfterACrashBetweenCommitAndOutputsRaisesNoSecondFlag() async throws {
        let harness = Harness()
        let first = harness.worker()
        try await harness.claim(first)
        let burst = Self.events("mallory", count: 9, gapMilliseconds: 500)
        let committed = try #require(try await first.commit(first.decode(try Self.batch(burst), topic: Self.topic), topic: Self.topic))
        #expect(harness.flagRecords.count == 1)
        #expect(harness.flags.published.isEmpty, "nothing leaves before the outputs step")
        let profile = harness.ledger.snapshot.stageState[FraudStage.userKey("mallory")]

        let restarted = harness.worker()
        try await harness.claim(restarted)
        #expect(harness.flags.published.map(\.flagID) == harness.flagRecords.map(\.key.key), "the outbox published the stored flag")
        #expect(harness.flags.flaggedUsers == ["mallory"])

        await restarted.applyUntilDone(try Self.batch(burst), topic: Self.topic)
        #expect(harness.flagRecords.count == 1)
        #expect(harness.flags.published.count == 1)
        #expect(harness.ledger.snapshot.stageState[FraudStage.userKey("mallory")] == profile)
        #expect(try await first.project(committed, topic: Self.topic) == false, "the stopped worker's late outputs are fenced")
        #expect(harness.flags.published.count == 1)
    }

    /// The fault: the worker stops after its outputs published a flag and counted it, before it cleared the batch's
    /// outbox entry. The partition's next owner publishes the flag again (a repeat readers drop by id) but does not
    /// count it again: `fraud_flags_total` counted it twice before.
    @Test func aFlagPublishedAgainFromTheOutboxIsCountedOnce() async throws {
        let registry = ScoreboardMetrics.bootstrap()
        // A rule id of this test's own: other tests raise rapid-actions flags in the same process's metrics.
        let rule = "rapid-actions-\(UUID().uuidString.prefix(8).lowercased())"
        var rules = Self.rules
        rules.rules = rules.rules.map { original in
            var renamed = original
            if renamed.id == "rapid-actions" { renamed.id = rule }
            return renamed
        }
        func counted() async throws -> Int {
            let router = Router()
            OperationsRoutes(registry: registry) { [:] }.add(to: router)
            let scrape = try await Application(router: router).test(.router) { client in
                try await client.execute(uri: "/metrics", method: .get) { String(buffer: $0.body) }
            }
            let line = scrape.split(separator: "\n").first { $0.hasPrefix("fraud_flags_total{") && $0.contains(#"rule="\#(rule)""#) }
            return line.flatMap { Int(Double($0.split(separator: " ").last ?? "") ?? 0) } ?? 0
        }
        let harness = Harness()
        func worker() -> ScoreWorker {
            var configuration = ScoreWorker.Configuration(
                consumer: KafkaConsumerConfiguration(client: KafkaClientConfiguration(bootstrapServers: ["unused:1"]), groupID: "g"),
                topics: TopicNames())
            configuration.fraudRules = rules
            return ScoreWorker(
                configuration: configuration, catalog: WorkerInProcessTests.pipelines.leaderboards, actions: WorkerInProcessTests.pipelines.actions,
                ports: WorkerPorts(
                    ledger: harness.ledger, boards: harness.boards, outputs: harness.outputs, topics: harness.topics, fraudFlags: harness.flags),
                logger: Logger(label: "test"))
        }
        let first = worker()
        try await harness.claim(first)
        let burst = try Self.batch(Self.events("mallory", count: 9, gapMilliseconds: 500))
        let committed = try #require(try await first.commit(first.decode(burst, topic: Self.topic), topic: Self.topic))
        // The outputs run, and the worker stops before the outbox rows are cleared.
        for output in committed.outputs { try await output.run() }
        #expect(harness.flags.published.count == 1)
        #expect(try await counted() == 1)

        try await harness.claim(worker())
        #expect(harness.flags.published.map(\.flagID) == Array(repeating: harness.flagRecords[0].key.key, count: 2), "published again, same id")
        #expect(try await counted() == 1, "counted once")
        #expect(harness.ledger.snapshot.outbox.isEmpty)
    }

    /// The fault: the fraud-flags topic does not acknowledge. The batch's outputs are retried until it does; the flag
    /// is published once it does, and stored once.
    @Test func aFlagWhosePublishFailsIsPublishedOnRetry() async throws {
        let harness = Harness()
        let worker = harness.worker()
        try await harness.claim(worker)
        harness.flags.failNextPublishes(2, with: KafkaError(code: .messageDelivery, reason: "Message timed out"))
        await worker.applyUntilDone(try Self.batch(Self.events("mallory", count: 9, gapMilliseconds: 100)), topic: Self.topic)
        #expect(harness.flagRecords.count == 1)
        #expect(harness.flags.published.count == 1)
        #expect(harness.ledger.snapshot.outbox.isEmpty)
    }

    /// Profiles carry over between batches: eight actions in one batch and the ninth in the next are still nine in 10 s.
    @Test func theProfileCarriesOverBetweenBatches() async throws {
        let harness = Harness()
        let worker = harness.worker()
        try await harness.claim(worker)
        let burst = Self.events("mallory", count: 9, gapMilliseconds: 1_000)
        await worker.applyUntilDone(try Self.batch(Array(burst[0..<8])), topic: Self.topic)
        #expect(harness.flagRecords.isEmpty)
        await worker.applyUntilDone(try Self.batch([burst[8]], from: 8), topic: Self.topic)
        #expect(harness.flagRecords.count == 1)
    }

    /// Token manipulation, from the rejections topic: three replayed or forged tokens of one user within a day are one
    /// critical flag, stored with the rejections' offsets; the same batch delivered again (a crash before the offsets
    /// were read back) raises no second flag and leaves the profile as it was. A rejection without a user, or another
    /// reason, counts for no one.
    @Test func rejectionsRaiseOneCriticalFlagAndAReplayNoSecond() async throws {
        let harness = Harness()
        let topics = TopicNames()
        harness.topics.set(topics.rejections, id: "rejections-1")
        let consumer = FraudRejectionConsumer(
            topic: topics.rejections,
            consumer: KafkaConsumerConfiguration(client: KafkaClientConfiguration(bootstrapServers: ["unused:1"]), groupID: "g-rejections"),
            stage: FraudStage(rules: Self.rules, outputs: harness.flags, logger: Logger(label: "test")),
            ports: WorkerPorts(ledger: harness.ledger, boards: harness.boards, outputs: harness.outputs, topics: harness.topics, fraudFlags: harness.flags),
            catalog: WorkerInProcessTests.pipelines.leaderboards, retry: RetryBackoff(initial: .milliseconds(1), maximum: .milliseconds(2)),
            batchDeadline: .seconds(10), logger: Logger(label: "test"))
        let starts = try await consumer.assign([0])
        #expect(starts.values.first == .offset(0))
        let rejections = [
            Rejection(rejectionID: "r1", reason: "action-token-replayed", userID: "mallory", clientIP: nil, action: "pvp-win", occurredAt: Timestamp(millisecondsSinceEpoch: 1_000), detail: nil),
            Rejection(rejectionID: "r2", reason: "rate-limited", userID: "mallory", clientIP: nil, action: "pvp-win", occurredAt: Timestamp(millisecondsSinceEpoch: 2_000), detail: nil),
            Rejection(rejectionID: "r3", reason: "invalid-action-token", userID: nil, clientIP: "10.0.0.1", action: nil, occurredAt: Timestamp(millisecondsSinceEpoch: 2_500), detail: nil),
            Rejection(rejectionID: "r4", reason: "invalid-action-token", userID: "mallory", clientIP: nil, action: "pvp-win", occurredAt: Timestamp(millisecondsSinceEpoch: 3_000), detail: nil),
            Rejection(rejectionID: "r5", reason: "action-token-replayed", userID: "mallory", clientIP: nil, action: "pvp-win", occurredAt: Timestamp(millisecondsSinceEpoch: 4_000), detail: nil),
        ]
        let encoder = JSONEncoder()
        let batch = KafkaConsumerBatch(messages: try rejections.enumerated().map { index, rejection in
            KafkaConsumerMessage(
                topic: topics.rejections, partition: 0, offset: Int64(index), key: ArraySlice(rejection.partitionKey.utf8),
                value: ArraySlice(try encoder.encode(rejection)), timestampMilliseconds: nil)
        })
        await consumer.applyUntilDone(batch)
        let records = harness.flagRecords
        #expect(records.count == 1)
        let flag = try JSONDecoder().decode(FraudFlagMessage.self, from: Data(try #require(records.first).payload))
        #expect(flag.ruleID == "token-manipulation" && flag.severity == .critical && flag.userID == "mallory" && flag.triggeredBy == "r5")
        #expect(flag.evidence["rejections"] == 3)
        #expect(harness.flags.published.map(\.flagID) == [flag.flagID])
        #expect(harness.ledger.snapshot.offsets[topics.rejections]?[0] == 5, "the offsets commit with the profiles")
        let profile = harness.ledger.snapshot.stageState[FraudStage.userKey("mallory")]

        await consumer.applyUntilDone(batch)
        #expect(harness.flagRecords.count == 1)
        #expect(harness.flags.published.count == 1)
        #expect(harness.ledger.snapshot.stageState[FraudStage.userKey("mallory")] == profile)
    }

    @Test func flagIDsAreDeterministicUUIDs() {
        let id = FraudFlagMessage.flagID(userID: "ann", ruleID: "rapid-actions", triggeredBy: "e1")
        #expect(id == FraudFlagMessage.flagID(userID: "ann", ruleID: "rapid-actions", triggeredBy: "e1"))
        #expect(id != FraudFlagMessage.flagID(userID: "ann", ruleID: "rapid-actions", triggeredBy: "e2"))
        #expect(id != FraudFlagMessage.flagID(userID: "bob", ruleID: "rapid-actions", triggeredBy: "e1"))
        #expect(UUID(uuidString: id) != nil && id == id.lowercased() && id.count == 36)
        #expect(Array(id)[14] == "8", "version 8")
        // Pinned: flag ids are stored (stage_records) and referenced by reviews, so every version must spell them
        // alike. Computed independently (two FNV-1a 64 hashes of "ann\nrapid-actions\ne1", version and variant set).
        #expect(id == "cee4de0b-c1c7-821a-a80a-81b6c192d8f1")
    }
}
