import Foundation
import Logging
import ScoreboardCore
import ScoreboardDefinitions
@testable import ScoreboardKafka
@testable import ScoreboardWorker
import Testing

/// The analytics stage inside the worker (registered in ScoreWorker's stages, fed from WorkerConfiguration): a batch
/// whose outputs are retried through a Redis outage, then the same batch replayed, count each event once, at the
/// catalog's price.
@Suite struct AnalyticsWorkerTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let analytics = try! AnalyticsCatalog.load(directory: root.appendingPathComponent("analytics"))

    @Test func theWorkerCountsEachEventOnceThroughRetriesAndReplays() async throws {
        let ledger = MemoryWorkerLedger()
        let boards = MemoryBoardStore(topN: WorkerInProcessTests.pipelines.leaderboards.topN)
        var configuration = ScoreWorker.Configuration(
            consumer: KafkaConsumerConfiguration(client: KafkaClientConfiguration(bootstrapServers: ["unused:1"]), groupID: "g"),
            topics: TopicNames())
        configuration.retry = RetryBackoff(initial: .milliseconds(1), maximum: .milliseconds(2))
        configuration.analytics = Self.analytics
        let worker = ScoreWorker(
            configuration: configuration, catalog: WorkerInProcessTests.pipelines.leaderboards, actions: WorkerInProcessTests.pipelines.actions,
            ports: WorkerPorts(
                ledger: ledger, boards: boards, outputs: MemoryWorkerOutputs(),
                topics: MemoryTopicIncarnations([WorkerInProcessTests.topic: "incarnation-1"])),
            logger: Logger(label: "test"))
        _ = try await worker.assign([KafkaTopicPartition(topic: WorkerInProcessTests.topic, partition: 0)], topic: WorkerInProcessTests.topic)
        // The client claims 999 points for each: the worker prices from the catalog.
        let batch = try WorkerInProcessTests.batch([("ann", "complete-quest", 999), ("bob", "complete-quest", 999), ("ann", "pvp-win", 999)])
        boards.failNextWrites(2, with: MemoryFailure())
        await worker.applyUntilDone(batch, topic: WorkerInProcessTests.topic)
        await worker.applyUntilDone(batch, topic: WorkerInProcessTests.topic)

        let prices = WorkerInProcessTests.pipelines.actions
        let minute = AnalyticsWindow.minute.bucketStart(of: Timestamp(millisecondsSinceEpoch: 1_764_000_000_000))
        func counter(_ metric: String, _ dimension: AnalyticsDimension? = nil, _ value: String = "") -> Int64? {
            ledger.snapshot.counters[StageKey(
                stage: "analytics", key: AnalyticsCellKey(metric: metric, window: .minute, dimension: dimension, bucketStart: minute, value: value).description)]
        }
        #expect(counter("events") == 3)
        #expect(counter("events", .action, "complete-quest") == 2)
        #expect(counter("points") == 2 * prices.points(for: "complete-quest")! + prices.points(for: "pvp-win")!)
        #expect(counter("events", .region, "eu") == 3 && counter("events", .guild, "dragons") == 3)
        let active = StageKey(stage: "analytics", key: AnalyticsCellKey(metric: "active-users", window: .minute, dimension: nil, bucketStart: minute).description)
        #expect(ledger.snapshot.members.filter { $0.set == active }.map(\.member).sorted() == ["ann", "bob"])
        let lagCounts = ledger.snapshot.counters.filter { $0.key.key.hasPrefix("lag|minute|le|") }.values.reduce(0, +)
        #expect(lagCounts == 3, "one lag observation per event")
    }

    struct MemoryFailure: Error {}
}
