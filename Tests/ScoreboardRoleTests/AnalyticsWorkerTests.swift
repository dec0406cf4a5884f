import Foundation
import Logging
import Synchronization
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
        // Active users: the exact set as the cell's state (read locked, replaced), its size as the counter.
        let active = StageKey(stage: "analytics", key: AnalyticsCellKey(metric: "active-users", window: .minute, dimension: nil, bucketStart: minute).description)
        #expect(ledger.snapshot.stageState[active].flatMap(DistinctCount.init(encoded:)) == .exact(["ann", "bob"]))
        #expect(counter("active-users") == 2)
        let lagCounts = ledger.snapshot.counters.filter { $0.key.key.hasPrefix("lag|minute|le|") }.values.reduce(0, +)
        #expect(lagCounts == 3, "one lag observation per event")
    }

    struct MemoryFailure: Error {}

    /// Retention with a PostgreSQL that fails: the failing passes are retried with backoff (the service does not throw,
    /// so the worker's group goes on), and once it answers, every metric's old cells are asked for, in batches until
    /// fewer than a batch come back.
    @Test func retentionRetriesAFailingStoreAndDeletesInBatches() async throws {
        /// Fails its first three calls; then has 5 old rows for each cell range and deletes at most `limit` a call.
        final class FlakyCells: AnalyticsCellRetention, Sendable {
            struct Down: Error {}
            struct Call: Hashable { var metric: String, window: AnalyticsWindow, dimension: AnalyticsDimension?, before: Int64 }
            let state = Mutex<(failures: Int, left: [Call: Int], calls: [Call])>((3, [:], []))
            let passDone: AsyncStream<Void>.Continuation
            let passes: AsyncStream<Void>
            let expectedCalls: Int

            init(expectedCalls: Int) {
                (passes, passDone) = AsyncStream.makeStream(of: Void.self)
                self.expectedCalls = expectedCalls
            }

            func deleteAnalyticsCells(metric: String, window: AnalyticsWindow, dimension: AnalyticsDimension?, before: Int64, limit: Int) async throws -> Int {
                let call = Call(metric: metric, window: window, dimension: dimension, before: before)
                let (deleted, isPassDone) = try state.withLock { state -> (Int, Bool) in
                    if state.failures > 0 {
                        state.failures -= 1
                        throw Down()
                    }
                    let left = state.left[call] ?? 5
                    let deleted = min(left, limit)
                    state.left[call] = left - deleted
                    state.calls.append(call)
                    return (deleted, Set(state.calls).count == expectedCalls && state.left.values.allSatisfy { $0 == 0 })
                }
                if isPassDone { passDone.yield() }
                return deleted
            }
        }
        let catalog = Self.analytics
        let retention = try #require(catalog.retentionDays)
        // One range per metric, window and breakdown (lag: by bucket only).
        let ranges = catalog.metrics.values.reduce(0) { $0 + $1.windows.count * ($1.kind == .lag ? 1 : 1 + $1.dimensions.count) }
        let cells = FlakyCells(expectedCalls: ranges)
        let now = Timestamp(millisecondsSinceEpoch: 1_764_115_200_000)
        let service = AnalyticsRetention(
            catalog: catalog, retention: retention, cells: cells, retry: RetryBackoff(initial: .milliseconds(1), maximum: .milliseconds(4)),
            deadline: .seconds(5), logger: Logger(label: "test"), interval: .seconds(3600), batchSize: 2, now: { now })
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await service.run() }
            var passes = cells.passes.makeAsyncIterator()
            await passes.next()
            group.cancelAll()
        }
        let calls = cells.state.withLock { $0.calls }
        // 5 rows in batches of 2: three calls per range (2, 2, 1).
        #expect(calls.count == 3 * ranges)
        #expect(cells.state.withLock { $0.failures } == 0, "the three failures were retried")
        let minuteLimit = try #require(calls.first { $0.window == .minute }?.before)
        #expect(minuteLimit == now.millisecondsSinceEpoch - 2 * 86_400_000, "minutes are kept 2 days")
        #expect(calls.first { $0.window == .day }?.before == now.millisecondsSinceEpoch - 400 * 86_400_000)
    }
}
