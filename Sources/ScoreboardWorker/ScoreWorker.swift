import Foundation
import Logging
import Metrics
import ScoreboardCore
import ScoreboardHTTP
import ScoreboardKafka
import ServiceLifecycle
import Synchronization

/// A stream worker: one member of the workers' consumer group on the score-events topic.
///
/// Each batch goes through one ledger transaction (``WorkerLedger/apply(_:aggregate:beforeCommit:)``): events
/// deduplicated by id, window totals, and next offsets fenced by the partition's epoch. Inside that transaction, after
/// the writes, the boards are set to the absolute totals and the changes are published; then it commits. A crash
/// anywhere before COMMIT replays the batch from the stored offsets and sets the same numbers again; a crash after
/// it has nothing left to do. The worker reads its batches from Kafka itself (``KafkaConsumer``) and reaches
/// everything else through ``WorkerPorts``.
public final class ScoreWorker: Service, Sendable {
    public struct Configuration: Sendable {
        public var consumer: KafkaConsumerConfiguration
        public var topics: TopicNames
        /// Bound on one attempt at a batch (its PostgreSQL transaction, Redis writes and update publishing). A server
        /// that stops answering must not hang the worker: the attempt is cancelled and retried. Generous, because a
        /// loaded machine can make a large batch slow and a cancelled batch starts over; readiness does not wait for
        /// it, since the probes name a server that is down within seconds.
        public var batchDeadline: Duration = .seconds(60)
        /// Bound on one readiness probe of the ledger and the board store, between batches.
        public var probeDeadline: Duration = .seconds(2)
        /// Delays between attempts while a dependency is down.
        public var retry = RetryBackoff(initial: .milliseconds(200), maximum: .seconds(5))
        /// How often lag, stall and the topic's incarnation are checked.
        public var monitorInterval: Duration = .seconds(2)
        /// A worker behind the log end that commits nothing for this long reports itself stalled.
        public var stallAfter: Duration = .seconds(30)

        public init(consumer: KafkaConsumerConfiguration, topics: TopicNames) {
            self.consumer = consumer
            self.topics = topics
        }
    }

    let configuration: Configuration
    let catalog: LeaderboardCatalog
    let actions: ActionCatalog
    let ports: WorkerPorts
    let logger: Logger
    /// What this worker claimed: the topic incarnation and each owned partition's epoch.
    let claims = Mutex(Claims())
    /// Progress, outages and lag, for readiness and metrics.
    public let health: WorkerHealth
    /// Set when the worker stops: an assignment still waiting for a dependency gives up.
    private let isStopping = Atomic<Bool>(false)

    struct Claims {
        var topicID: String?
        var epochs: [Int32: Int64] = [:]
        /// What the last answered incarnation check found of the topic (`nil` before the first answer).
        var observed: TopicObservation?
    }

    public init(configuration: Configuration, catalog: LeaderboardCatalog, actions: ActionCatalog, ports: WorkerPorts, logger: Logger) {
        self.configuration = configuration
        self.catalog = catalog
        self.actions = actions
        self.ports = ports
        self.logger = logger
        self.health = WorkerHealth(stallAfter: configuration.stallAfter, logger: logger)
    }

    public func run() async throws {
        let topic = configuration.topics.scoreEvents
        let handler = KafkaRebalanceHandler(
            onAssign: { [self] partitions in try await self.assign(partitions, topic: topic) },
            onRevoke: { [self] partitions in self.revoke(partitions) })
        let consumer = try KafkaConsumer(configuration: configuration.consumer, topics: [topic], rebalanceHandler: handler, logger: logger)
        health.markStarted()
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.monitor(consumer: consumer, topic: topic) }
                await self.consume(consumer, topic: topic)
                group.cancelAll()
            }
        } onGracefulShutdown: {
            self.isStopping.store(true, ordering: .releasing)
        }
        isStopping.store(true, ordering: .releasing)
        await consumer.close()
        logger.info("worker stopped")
    }

    /// Takes batches until graceful shutdown. A batch is retried until it is applied (or fenced): it is never
    /// skipped, and the offsets stored with it only move when it commits.
    private func consume(_ consumer: KafkaConsumer, topic: String) async {
        var batches = consumer.batches.cancelOnGracefulShutdown().makeAsyncIterator()
        var backoff = configuration.retry
        while !isStopping.load(ordering: .acquiring) {
            let batch: KafkaConsumerBatch?
            do {
                batch = try await batches.next()
            } catch {
                // The consumer reports what librdkafka could not recover from by itself (an assignment that failed,
                // a fatal error). The worker stays up, says so, and asks again.
                logger.error("Kafka consumer error", metadata: ["error": "\(error)"])
                health.attemptFailed(error)
                await pause(backoff.nextDelay())
                continue
            }
            guard let batch else { break }
            backoff.reset()
            await applyUntilDone(batch, topic: topic)
        }
    }

    /// Applies one batch, retrying with capped backoff while a dependency is down, until it commits, is fenced, or
    /// the worker stops (then the batch is left uncommitted, to be replayed by the partition's next owner).
    func applyUntilDone(_ batch: KafkaConsumerBatch, topic: String) async {
        var backoff = configuration.retry
        while !isStopping.load(ordering: .acquiring) {
            do {
                try await withTimeout(configuration.batchDeadline) { try await self.process(batch, topic: topic) }
                health.attemptSucceeded()
                return
            } catch {
                if isStopping.load(ordering: .acquiring) { return }
                health.attemptFailed(error)
                Counter(label: "worker_batch_failures_total", dimensions: [("dependency", WorkerHealth.Dependency(classifying: error).rawValue)])
                    .increment()
                await pause(backoff.nextDelay())
            }
        }
    }

    /// Sleeps, but returns at once on graceful shutdown.
    private func pause(_ delay: Duration) async {
        try? await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) }
    }

    // MARK: - Assignment

    /// Resumes each assigned partition where PostgreSQL says, after claiming it (which fences out the previous owner).
    /// While the topic cannot be described or PostgreSQL cannot be reached, it retries (the consumer reads nothing in
    /// the meantime) and reports the assignment as the reason it is not ready.
    func assign(_ partitions: [KafkaTopicPartition], topic: String) async throws -> [KafkaTopicPartition: KafkaStartOffset] {
        guard !partitions.isEmpty else { return [:] }
        var backoff = configuration.retry
        while true {
            do {
                let starts = try await withTimeout(configuration.batchDeadline) {
                    try await self.claim(partitions.map(\.partition), topic: topic)
                }
                health.assignmentFailed(nil)
                return Dictionary(uniqueKeysWithValues: starts.map { (KafkaTopicPartition(topic: topic, partition: $0.key), .offset($0.value)) })
            } catch {
                if isStopping.load(ordering: .acquiring) { throw error }
                let problem = error is TopicMissing ? "the \(topic) topic does not exist: run `scoreboard topics apply`"
                    : "\(WorkerHealth.Dependency(classifying: error).rawValue) unavailable while claiming partitions"
                if backoff.attempts == 0 {
                    logger.error("partition assignment failed: retrying", metadata: ["error": "\(error)", "partitions": "\(partitions.map(\.partition))"])
                }
                health.assignmentFailed(problem)
                try? await Task.sleep(for: backoff.nextDelay())
            }
        }
    }

    /// Claims `partitions` in PostgreSQL for the topic's current incarnation and returns where each resumes.
    private func claim(_ partitions: [Int32], topic: String) async throws -> [Int32: Int64] {
        guard let topicID = try await ports.topics.topicID(of: topic) else { throw TopicMissing(topic: topic) }
        let claimed = try await ports.ledger.claim(topic: topic, topicID: topicID, partitions: partitions)
        let owned = claims.withLock { claims in
            claims.topicID = topicID
            for claim in claimed { claims.epochs[claim.partition] = claim.epoch }
            return claims.epochs.keys.sorted()
        }
        health.assigned(owned)
        logger.info("assigned", metadata: [
            "partitions": "\(claimed.map { "\($0.partition)@\($0.nextOffset)#\($0.epoch)" })", "kafka.topic.id": "\(topicID)",
        ])
        return Dictionary(uniqueKeysWithValues: claimed.map { ($0.partition, $0.nextOffset) })
    }

    func revoke(_ partitions: [KafkaTopicPartition]) {
        let owned = claims.withLock { claims in
            for partition in partitions { claims.epochs[partition.partition] = nil }
            return claims.epochs.keys.sorted()
        }
        health.assigned(owned)
        logger.info("revoked", metadata: ["partitions": "\(partitions.map(\.partition))"])
    }

    // MARK: - Monitoring

    /// Every `monitorInterval`: exports lag per partition and the last commit time, and checks that the topic is
    /// still the incarnation the partitions were claimed on. A memory-only broker that restarted has a new, empty
    /// log; the stored offsets then lie beyond its end, where a consumer would wait forever without an error. The
    /// topic id tells the incarnations apart: on a new one the partitions are claimed again (from offset 0), and a
    /// worker that owns none rejoins the group (``incarnationRepair(previous:current:claimedID:ownsPartitions:)``).
    private func monitor(consumer: KafkaConsumer, topic: String) async {
        while !Task.isCancelled {
            let lag = consumer.lag()
            let byPartition = Dictionary(lag.map { ($0.key.partition, $0.value) }, uniquingKeysWith: max)
            health.updateLag(byPartition)
            for (partition, behind) in byPartition {
                Gauge(label: "worker_consumer_lag", dimensions: [("topic", topic), ("partition", "\(partition)")]).record(behind)
            }
            if let committed = health.snapshot.lastCommitAt {
                Gauge(label: "worker_last_commit_timestamp_seconds").record(Double(committed.millisecondsSinceEpoch) / 1000)
            }
            await probeDependencies()
            await checkIncarnation(consumer: consumer, topic: topic)
            try? await Task.sleep(for: configuration.monitorInterval)
        }
    }

    /// Asks the ledger and the board store whether they answer, so readiness names a server that is down even while
    /// no batch is trying it (an idle worker) or while the batch in hand still waits for it.
    func probeDependencies() async {
        let deadline = configuration.probeDeadline
        let ports = self.ports
        await withTaskGroup(of: Probe.self) { group in
            group.addTask { Probe(dependency: .postgres, error: await Self.failure { try await withTimeout(deadline) { try await ports.ledger.probe() } }) }
            group.addTask { Probe(dependency: .redis, error: await Self.failure { try await withTimeout(deadline) { try await ports.boards.probe() } }) }
            for await probe in group { health.probed(probe.dependency, error: probe.error) }
        }
    }

    /// A probe's answer. A struct, not a tuple, as a task-group result: see scripts/repro/taskgroup-tuple-results.swift.
    struct Probe: Sendable {
        var dependency: WorkerHealth.Dependency
        var error: (any Error)?
    }

    private static func failure(_ body: () async throws -> Void) async -> (any Error)? {
        do {
            try await body()
            return nil
        } catch {
            return error
        }
    }

    private func checkIncarnation(consumer: KafkaConsumer, topic: String) async {
        let described: String?
        do {
            described = try await withTimeout(.seconds(5)) { try await self.ports.topics.topicID(of: topic) }
        } catch {
            return  // The broker did not answer: nothing learnt about the topic.
        }
        let current: TopicObservation = described.map { .incarnation($0) } ?? .missing
        let (repair, previous) = claims.withLock { claims in
            defer { claims.observed = current }
            let repair = Self.incarnationRepair(
                previous: claims.observed, current: current, claimedID: claims.topicID, ownsPartitions: !claims.epochs.isEmpty)
            return (repair, claims.observed)
        }
        switch repair {
        case .none:
            return
        case .reclaim(let topicID):
            logger.warning("the topic was recreated (the broker lost its log?): claiming its partitions again from the new log", metadata: [
                "kafka.topic.id.old": "\(claims.withLock { $0.topicID } ?? "none")", "kafka.topic.id.new": "\(topicID)",
            ])
            let owned = claims.withLock { $0.epochs.keys.sorted() }
            do {
                let starts = try await withTimeout(configuration.batchDeadline) { try await self.claim(owned, topic: topic) }
                try await consumer.seek(Dictionary(uniqueKeysWithValues: starts.map { (KafkaTopicPartition(topic: topic, partition: $0.key), $0.value) }))
            } catch {
                logger.error("re-claiming a recreated topic failed: trying again at the next check", metadata: ["error": "\(error)"])
            }
        case .rejoin(let topicID):
            logger.warning("the topic was recreated while this worker owned none of it: rejoining the group so that it is assigned again", metadata: [
                "kafka.topic.id.before": "\(previous.map(String.init(describing:)) ?? "none")", "kafka.topic.id.new": "\(topicID)",
            ])
            consumer.rejoinGroup()
        }
    }

    /// What an answered incarnation check found of the topic.
    enum TopicObservation: Equatable, Sendable, CustomStringConvertible {
        case missing
        case incarnation(String)

        var description: String {
            switch self {
            case .missing: "missing"
            case .incarnation(let id): id
            }
        }
    }

    /// What the monitor does about the topic's incarnation.
    enum IncarnationRepair: Equatable, Sendable {
        case none
        /// Claim the owned partitions again on this incarnation (they start over at 0) and seek there.
        case reclaim(topicID: String)
        /// Leave and rejoin the consumer group, so that the partitions are assigned again from the topic as it is now.
        case rejoin(topicID: String)
    }

    /// Decides, from two successive checks of the topic and what this worker claimed, whether its consumption still
    /// follows the log the broker holds.
    ///
    /// - Owned partitions claimed on another incarnation: their stored offsets lie beyond the new log's end, where a
    ///   consumer waits forever without an error (a memory-only broker restarted). Claim them again.
    /// - Nothing owned, and the topic has just appeared or changed since the previous check: the group may have been
    ///   assigned while the topic did not exist (members rejoin a restarted broker before `topics apply`), and
    ///   librdkafka does not always notice the topic coming back (``KafkaConsumer/rejoinGroup()`` says why). Rejoin, once
    ///   per change: owning nothing is also what a worker beyond the partition count does, and that one must not
    ///   rebalance the group at every check.
    static func incarnationRepair(
        previous: TopicObservation?, current: TopicObservation, claimedID: String?, ownsPartitions: Bool
    ) -> IncarnationRepair {
        guard case .incarnation(let topicID) = current else { return .none }
        if ownsPartitions { return claimedID == topicID ? .none : .reclaim(topicID: topicID) }
        guard let previous, previous != current else { return .none }
        return .rejoin(topicID: topicID)
    }

    // MARK: - Batches

    /// One attempt at a batch, end to end. A fenced batch is dropped: the partition has a new owner, which resumes
    /// from the offsets this worker last committed.
    func process(_ batch: KafkaConsumerBatch, topic: String) async throws {
        let start = ContinuousClock.now
        var events: [SourcedEvent] = []
        var deadLetters: [DeadLetter] = []
        let decoder = JSONDecoder()
        for message in batch.messages {
            do {
                var event = try decoder.decode(ScoreEvent.self, from: Data(message.value))
                try event.validate()
                // Points come from the catalog, never from the message: anyone who can write to the topic could
                // otherwise award any score the schema allows.
                guard let points = actions.points(for: event.action) else {
                    throw ScoreboardError(code: .invalidEvent, reasons: ["action \(event.action) is not in the action catalog"])
                }
                event.points = points
                events.append(SourcedEvent(event: event, partition: message.partition, offset: message.offset))
            } catch {
                deadLetters.append(deadLetter(message, reason: "\(error)"))
            }
        }
        let unreadable = deadLetters
        let nextOffsets = Dictionary(batch.nextOffsets.map { ($0.key.partition, $0.value) }, uniquingKeysWith: max)
        let claimed = claims.withLock { $0.epochs }
        let ledgerBatch = LedgerBatch(
            topic: topic, events: events, nextOffsets: nextOffsets,
            epochs: claimed.filter { nextOffsets[$0.key] != nil })
        do {
            let phases = PhaseClock()
            let catalog = self.catalog
            try await ports.ledger.apply(ledgerBatch, aggregate: { BatchAggregation(events: $0, catalog: catalog) }) { [self] applied in
                phases.mark("ledger")
                // Inside the transaction and after the epoch check: a fenced batch publishes nothing, and the dead
                // letters of a committed batch are published by the attempt that commits it.
                if !unreadable.isEmpty { try await ports.outputs.publishDeadLetters(unreadable) }
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
                let ranks = try await ports.boards.setScores(changed)
                phases.mark("boards")
                try await publishUpdates(changed, ranks: ranks)
                phases.mark("updates")
            }
            phases.mark("commit")
            logger.debug("batch applied", metadata: ["events": "\(events.count)", "phases": "\(phases.summary)"])
        } catch let fenced as LedgerFenced {
            logger.warning("batch dropped", metadata: ["reason": "\(fenced)"])
            Counter(label: "worker_fenced_batches_total").increment()
            return
        }
        health.committed(events: events.count)
        Counter(label: "worker_events_total").increment(by: events.count)
        if !deadLetters.isEmpty { Counter(label: "worker_dead_letters_total").increment(by: deadLetters.count) }
        Timer(label: "worker_batch_duration_seconds").recordInterval(since: start)
    }

    private func publishUpdates(_ changed: [BoardKey: [String: Int64]], ranks: [BoardKey: [String: Int]]) async throws {
        var updates: [LeaderboardUpdate] = []
        for (board, members) in changed.sorted(by: { $0.key.id < $1.key.id }) {
            for (member, total) in members.sorted(by: { $0.key < $1.key }) {
                updates.append(LeaderboardUpdate(board: board, userID: member, total: total, rank: ranks[board]?[member]))
            }
        }
        try await ports.outputs.publishUpdates(updates)
        Counter(label: "worker_updates_published_total").increment(by: updates.count)
    }

    private func deadLetter(_ message: KafkaConsumerMessage, reason: String) -> DeadLetter {
        DeadLetter(
            sourceTopic: message.topic, sourcePartition: message.partition, sourceOffset: message.offset, error: String(reason.prefix(2000)),
            payload: Data(message.value).base64EncodedString(), failedAt: Timestamp.now().millisecondsSinceEpoch, key: message.key.map(Array.init))
    }
}

/// The topic a worker was asked to consume does not exist (yet).
struct TopicMissing: ServerFailure, CustomStringConvertible {
    var topic: String
    var server: ServerKind { .kafka }
    var description: String { "the topic \(topic) does not exist" }
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
