import Foundation
import Logging
import Metrics
import ScoreboardCore
import ScoreboardHTTP
import ScoreboardKafka
import ScoreboardPostgres
import ScoreboardRedis
import ServiceLifecycle
import Synchronization

/// A stream worker: one member of the workers' consumer group on the score-events topic.
///
/// Each batch goes through one PostgreSQL transaction (``ScoreLedger/apply(_:catalog:beforeCommit:)``): events
/// deduplicated by id, window totals, and next offsets fenced by the partition's epoch. Inside that transaction, after
/// the writes, the Redis boards are set to the absolute totals and the changes are published to the
/// leaderboard-updates topic; then it commits. A crash anywhere before COMMIT replays the batch from the stored
/// offsets and sets the same numbers again; a crash after it has nothing left to do.
public final class ScoreWorker: Service, Sendable {
    public struct Configuration: Sendable {
        public var consumer: KafkaConsumerConfiguration
        public var topics: TopicNames

        public init(consumer: KafkaConsumerConfiguration, topics: TopicNames) {
            self.consumer = consumer
            self.topics = topics
        }
    }

    let configuration: Configuration
    let catalog: LeaderboardCatalog
    let ledger: ScoreLedger
    let projector: BoardProjector
    let producer: KafkaProducer
    let admin: KafkaAdminClient
    let logger: Logger
    /// The epoch claimed for each owned partition.
    let epochs = Mutex<[Int32: Int64]>([:])
    /// Whether the worker has an assignment and its last batch went through: for readiness.
    public let status = Mutex<Status>(Status())

    public struct Status: Sendable {
        public var assignedPartitions: [Int32] = []
        public var batches = 0
        public var events = 0
    }

    public init(
        configuration: Configuration, catalog: LeaderboardCatalog, ledger: ScoreLedger, redis: RedisConnectionPool, producer: KafkaProducer,
        admin: KafkaAdminClient, logger: Logger
    ) {
        self.configuration = configuration
        self.catalog = catalog
        self.ledger = ledger
        self.projector = BoardProjector(redis: redis, catalog: catalog)
        self.producer = producer
        self.admin = admin
        self.logger = logger
    }

    public func run() async throws {
        let topic = configuration.topics.scoreEvents
        let handler = KafkaRebalanceHandler(
            onAssign: { [self] partitions in try await self.assign(partitions, topic: topic) },
            onRevoke: { [self] partitions in self.revoke(partitions) })
        let consumer = try KafkaConsumer(configuration: configuration.consumer, topics: [topic], rebalanceHandler: handler, logger: logger)
        do {
            for try await batch in consumer.batches.cancelOnGracefulShutdown() {
                try await process(batch, topic: topic)
            }
        } catch {
            await consumer.close()
            throw error
        }
        await consumer.close()
        logger.info("worker stopped")
    }

    /// Resumes each assigned partition where PostgreSQL says, after claiming it (which fences out the previous owner).
    func assign(_ partitions: [KafkaTopicPartition], topic: String) async throws -> [KafkaTopicPartition: KafkaStartOffset] {
        guard !partitions.isEmpty else { return [:] }
        guard let description = try await admin.describeTopics([topic])[topic] else {
            throw KafkaError.unknownTopic(topic)
        }
        let claims = try await ledger.claim(topic: topic, topicID: description.topicID, partitions: partitions.map(\.partition))
        epochs.withLock { epochs in for claim in claims { epochs[claim.partition] = claim.epoch } }
        status.withLock { $0.assignedPartitions = epochs.withLock { $0.keys.sorted() } }
        logger.info("assigned", metadata: ["partitions": "\(claims.map { "\($0.partition)@\($0.nextOffset)#\($0.epoch)" })"])
        return Dictionary(uniqueKeysWithValues: claims.map { (KafkaTopicPartition(topic: topic, partition: $0.partition), .offset($0.nextOffset)) })
    }

    func revoke(_ partitions: [KafkaTopicPartition]) {
        epochs.withLock { epochs in for partition in partitions { epochs[partition.partition] = nil } }
        status.withLock { $0.assignedPartitions = epochs.withLock { $0.keys.sorted() } }
        logger.info("revoked", metadata: ["partitions": "\(partitions.map(\.partition))"])
    }

    /// One batch, end to end. A fenced batch is dropped: the partition has a new owner, which resumes from the
    /// offsets this worker last committed.
    func process(_ batch: KafkaConsumerBatch, topic: String) async throws {
        let start = ContinuousClock.now
        var events: [ScoreLedger.SourcedEvent] = []
        var deadLetters: [KafkaProducerMessage] = []
        let decoder = JSONDecoder()
        for message in batch.messages {
            do {
                let event = try decoder.decode(ScoreEvent.self, from: Data(message.value))
                try event.validate()
                events.append(ScoreLedger.SourcedEvent(event: event, partition: message.partition, offset: message.offset))
            } catch {
                deadLetters.append(deadLetter(message, reason: "\(error)"))
            }
        }
        if !deadLetters.isEmpty {
            // Published before the offsets move past them, so nothing unreadable is lost silently.
            for result in try await producer.send(batch: deadLetters) { _ = try result.get() }
            Counter(label: "worker_dead_letters_total").increment(by: deadLetters.count)
        }
        let nextOffsets = Dictionary(batch.nextOffsets.map { ($0.key.partition, $0.value) }, uniquingKeysWith: max)
        let claimed = epochs.withLock { $0 }
        let ledgerBatch = ScoreLedger.Batch(
            topic: topic, events: events, nextOffsets: nextOffsets,
            epochs: claimed.filter { nextOffsets[$0.key] != nil })
        do {
            let phases = PhaseClock()
            try await ledger.apply(ledgerBatch, catalog: catalog) { [self] applied in
                phases.mark("postgres")
                let scores = BatchAggregation.boardScores(totals: applied.totals, catalog: catalog)
                // Only boards the new events touched: a member's rows in other regions/guilds come along for the
                // global sum, but their own boards did not change.
                let touched = Set(applied.newEvents.flatMap { catalog.boards(for: $0) })
                var changed: [BoardKey: [String: Int64]] = [:]
                let touchedMembers = Set(applied.newEvents.map(\.userID))
                for (board, members) in scores where touched.contains(board) {
                    let relevant = members.filter { touchedMembers.contains($0.key) }
                    if !relevant.isEmpty { changed[board] = relevant }
                }
                let ranks = try await projector.project(changed)
                phases.mark("redis")
                try await publishUpdates(changed, ranks: ranks)
                phases.mark("updates")
            }
            phases.mark("commit")
            logger.debug("batch applied", metadata: ["events": "\(events.count)", "phases": "\(phases.summary)"])
        } catch let fenced as ScoreLedger.Fenced {
            logger.warning("batch dropped", metadata: ["reason": "\(fenced)"])
            Counter(label: "worker_fenced_batches_total").increment()
            return
        }
        status.withLock { status in
            status.batches += 1
            status.events += events.count
        }
        Counter(label: "worker_events_total").increment(by: events.count)
        Timer(label: "worker_batch_duration_seconds").recordInterval(since: start)
    }

    private func publishUpdates(_ changed: [BoardKey: [String: Int64]], ranks: [BoardKey: [String: Int]]) async throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        var messages: [KafkaProducerMessage] = []
        for (board, members) in changed.sorted(by: { $0.key.id < $1.key.id }) {
            for (member, total) in members.sorted(by: { $0.key < $1.key }) {
                let update = LeaderboardUpdate(board: board, userID: member, total: total, rank: ranks[board]?[member])
                messages.append(KafkaProducerMessage(
                    topic: configuration.topics.leaderboardUpdates, key: Array(board.streamID.utf8), value: Array(try encoder.encode(update))))
            }
        }
        for result in try await producer.send(batch: messages) { _ = try result.get() }
        Counter(label: "worker_updates_published_total").increment(by: messages.count)
    }

    private func deadLetter(_ message: KafkaConsumerMessage, reason: String) -> KafkaProducerMessage {
        struct DeadLetter: Encodable {
            var schemaVersion = 1
            var sourceTopic: String
            var sourcePartition: Int32
            var sourceOffset: Int64
            var error: String
            var payload: String
            var failedAt: Int64
        }
        let letter = DeadLetter(
            sourceTopic: message.topic, sourcePartition: message.partition, sourceOffset: message.offset, error: String(reason.prefix(2000)),
            payload: Data(message.value).base64EncodedString(), failedAt: Timestamp.now().millisecondsSinceEpoch)
        let value = (try? JSONEncoder().encode(letter)) ?? Data()
        return KafkaProducerMessage(topic: configuration.topics.deadLetter, key: message.key.map(Array.init), value: Array(value))
    }
}

extension Timer {
    func recordInterval(since start: ContinuousClock.Instant) {
        let (seconds, attoseconds) = (ContinuousClock.now - start).components
        recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}

/// Phase durations of one batch, for the debug log.
final class PhaseClock: Sendable {
    private let state = Mutex<(last: ContinuousClock.Instant, phases: [(String, Duration)])>((ContinuousClock.now, []))

    func mark(_ name: String) {
        state.withLock { state in
            let now = ContinuousClock.now
            state.phases.append((name, now - state.last))
            state.last = now
        }
    }

    var summary: String {
        state.withLock { $0.phases.map { "\($0.0)=\($0.1.formatted(.units(allowed: [.milliseconds], width: .narrow)))" }.joined(separator: " ") }
    }
}
