import Foundation
import Logging
import ScoreboardCLI
import ScoreboardCore
import ScoreboardDefinitions
import ScoreboardKafka
import ScoreboardWorker
import Synchronization
import Testing

/// A worker (in process, memory ledger and boards) against a private Tansu that is killed and restarted empty, the
/// broker scenario of the fault suite (ChaosTests `brokerKilledAndRestartedEmpty`) without the role processes.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct WorkerBrokerRestartTests {
    static let pipelines = try! PipelineCatalog.load(directory: Repository.root.appendingPathComponent("pipelines"))

    /// The fault: the broker comes back empty, and the worker rejoins its group *before* `topics apply` recreated the
    /// topic (on a loaded machine `topics apply` starts seconds after the broker). The leader then assigns nothing,
    /// and librdkafka, which still remembers the old topic's partition count, sees no change when the same count
    /// reappears: before the fix the group stayed idle on the new topic for good (the full-run failure of the chaos
    /// scenario: 1,096 events accepted after the restart were never consumed).
    @Test func aGroupThatRejoinedBeforeTheTopicWasRecreatedConsumesTheNewLog() async throws {
        let partitions: Int32 = 4
        let broker = try await PrivateBroker()
        let client = KafkaClientConfiguration(bootstrapServers: [broker.address])
        let topics = TopicNames(namespace: "\(TestEnvironment.uniqueName("restart")).")
        let admin = try KafkaAdminClient(configuration: client, logger: TestEnvironment.logger)
        _ = try await admin.createTopics([KafkaNewTopic(name: topics.scoreEvents, partitions: partitions)])

        let log = LogRecorder()
        let ledger = MemoryWorkerLedger()
        var consumer = KafkaConsumerConfiguration(client: client, groupID: TestEnvironment.uniqueName("workers"))
        consumer.sessionTimeout = .seconds(3)
        consumer.heartbeatInterval = .milliseconds(300)
        var configuration = ScoreWorker.Configuration(consumer: consumer, topics: topics)
        configuration.monitorInterval = .milliseconds(500)
        let worker = ScoreWorker(
            configuration: configuration, catalog: Self.pipelines.leaderboards, actions: Self.pipelines.actions,
            ports: WorkerPorts(
                ledger: ledger, boards: MemoryBoardStore(topN: Self.pipelines.leaderboards.topN), outputs: MemoryWorkerOutputs(),
                topics: admin),
            logger: log.logger)
        let running = Task { try await worker.run() }
        defer { running.cancel() }

        // Before the fault: the worker owns every partition and applies what is there.
        let before = try await send(20, to: topics.scoreEvents, broker: client)
        try await waitUntilApplied(before, ledger: ledger)

        broker.kill()
        try await broker.start()
        // The group forms again on the empty broker, with nothing to assign (the topic does not exist yet).
        let since = log.count
        try await within(.seconds(60)) {
            while !log.lines(since: since).contains(where: { $0.message == "Kafka partitions assigned" && $0.metadata["kafka.partitions"] == "[]" }) {
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        // `topics apply`, late: the same topic and partition count, a new incarnation.
        _ = try await within(.seconds(30)) {
            try await KafkaAdminClient(configuration: client, logger: TestEnvironment.logger)
                .createTopics([KafkaNewTopic(name: topics.scoreEvents, partitions: partitions)])
        }
        let after = try await send(40, to: topics.scoreEvents, broker: client)
        // librdkafka refreshes metadata every 10 s: 45 s is several chances to notice the topic on its own.
        try await waitUntilApplied(before.union(after), ledger: ledger, within: .seconds(45))
        #expect(log.lines(since: since).contains { $0.message == "leaving and rejoining the consumer group" })
        running.cancel()
        try? await running.value
        broker.kill()
    }

    /// Sends `count` score events to every partition in turn (a fresh producer: the broker may be a new one) and
    /// returns their event ids.
    func send(_ count: Int, to topic: String, broker client: KafkaClientConfiguration) async throws -> Set<String> {
        var configuration = KafkaProducerConfiguration(client: client)
        configuration.deliveryTimeout = .seconds(20)
        let producer = try KafkaProducer(configuration: configuration, logger: TestEnvironment.logger)
        var ids: Set<String> = []
        let encoder = JSONEncoder()
        for index in 0..<count {
            let event = ScoreEvent(
                eventID: UUID().uuidString.lowercased(), userID: "u\(index)", action: "complete-quest", points: 0,
                occurredAt: Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000)), region: "eu", guild: nil,
                idempotencyKey: UUID().uuidString.lowercased(), source: .gameServer)
            _ = try await producer.send(KafkaProducerMessage(topic: topic, key: Array("u\(index)".utf8), value: Array(try encoder.encode(event))))
            ids.insert(event.eventID)
        }
        await producer.shutdown()
        return ids
    }

    func waitUntilApplied(_ ids: Set<String>, ledger: MemoryWorkerLedger, within limit: Duration = .seconds(60)) async throws {
        do {
            try await within(limit) {
                while !ids.isSubset(of: ledger.snapshot.eventIDs) { try await Task.sleep(for: .milliseconds(50)) }
            }
        } catch {
            Issue.record("\(ids.subtracting(ledger.snapshot.eventIDs).count) of \(ids.count) events never applied within \(limit)")
            throw error
        }
    }
}

/// Keeps every log line of a logger, for tests that wait for something only the log says.
final class LogRecorder: Sendable {
    struct Line: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]
    }

    private let recorded = Mutex<[Line]>([])

    var logger: Logger {
        var logger = Logger(label: "test.recorded") { _ in Handler(recorder: self) }
        logger.logLevel = .info
        return logger
    }

    var count: Int { recorded.withLock { $0.count } }

    func lines(since index: Int) -> [Line] { recorded.withLock { Array($0[index...]) } }

    func append(_ line: Line) { recorded.withLock { $0.append(line) } }

    struct Handler: LogHandler {
        let recorder: LogRecorder
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .info

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let all = metadata.merging(event.metadata ?? [:]) { _, new in new }
            recorder.append(Line(level: event.level, message: "\(event.message)", metadata: all.mapValues { "\($0)" }))
        }
    }
}
