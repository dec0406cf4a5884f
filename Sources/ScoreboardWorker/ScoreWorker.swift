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
/// Batches flow through a pipeline of three steps, each running one batch at a time and overlapping the others:
/// 1. **Decode** (the consume loop): parse, price from the catalog and pre-aggregate batch n+1 while batch n is in the
///    steps below.
/// 2. **Ledger** (one PostgreSQL transaction, ``WorkerLedger/apply(_:aggregate:reads:beforeCommit:)``): events deduplicated
///    by id, window totals, next offsets fenced by the partition's epoch, and each ``WorkerStage``'s rows, among them
///    the *outbox* entries naming what the batch owes outside PostgreSQL. No network round trip but PostgreSQL's own
///    happens while its row locks are held.
/// 3. **Outputs** (the projector, in commit order): each stage's effects (Redis boards raised to the committed
///    absolute totals, one leaderboard-updates message per board, dead letters), fenced by the epochs, then the outbox
///    entries are cleared.
/// An offset is stored only with the batch's effects on PostgreSQL and the outbox entries that cover the rest, so it
/// never runs ahead of what it covers: a crash between the commit and the outputs leaves the entries, and the
/// partition's next owner (this worker restarted, or another) produces their effects from the totals then current
/// when it claims the partition. Redis writes only ever raise a score (totals never decrease), so a late projection
/// never lowers a board. The worker reads its batches from Kafka itself (``KafkaConsumer``) and reaches everything else
/// through ``WorkerPorts``.
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
        /// Batches between their decoding and the end of their outputs: one decoding, one in the ledger, one in the
        /// projector. More buys nothing (each step takes one batch at a time) and holds more memory.
        public var pipelineDepth = 3
        /// The leaderboard-updates messages published: 2, one per board per batch with its changed members
        /// (`BoardChanges`; the push gateway reads both versions); 1, one per member per board (`LeaderboardUpdate`),
        /// for consumers that read only version 1.
        public var updateSchemaVersion = 2
        /// The achievements to unlock (`pipelines/achievements.yaml`), with the player statistics' state they keep;
        /// `nil`: no achievement stage.
        public var achievements: AchievementCatalog?
        /// The fraud rules (`pipelines/fraud.yaml`) the fraud stage runs; `nil`: no fraud stage.
        public var fraudRules: FraudRuleSet?
        /// What the analytics stage counts (`analytics/metrics.yaml`); nothing when empty.
        public var analytics = AnalyticsCatalog.empty

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
    /// The batch's work beside the ledger, in order: leaderboards first.
    let stages: [any WorkerStage]
    let inFlight = BatchesInFlight()
    /// How many messages the next batch may take: what fits in about a second at the recent speed, small again after
    /// every assignment, so that a batch commits between two rebalances however loaded the machine (BatchSizer).
    let sizer: Mutex<BatchSizer>

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
        let maximum = max(1, configuration.consumer.maxBatchSize)
        self.sizer = Mutex(BatchSizer(minimum: min(50, maximum), initial: min(250, maximum), maximum: maximum))
        // Ranking achievements read the ranks of the leaderboard stage's board writes (AchievementStage.swift).
        let achievements = configuration.achievements.map { AchievementEngine(catalog: $0) }
        let boards: any BoardStore = achievements.map {
            RankAchievementBoards(base: ports.boards, engine: $0, ledger: ports.ledger, notifications: ports.notifications) as any BoardStore
        } ?? ports.boards
        self.stages = [
            LeaderboardStage(
                catalog: catalog, ledger: ports.ledger, boards: boards,
                // The port itself, not the ranking wrapper: a removal unlocks nothing.
                removals: ports.boards as? any BoardRemovals, outputs: ports.outputs,
                updateSchemaVersion: configuration.updateSchemaVersion),
            DeadLetterStage(outputs: ports.outputs),
            AnalyticsStage(catalog: configuration.analytics),
        ] + (achievements.map { [AchievementStage(engine: $0, notifications: ports.notifications)] as [any WorkerStage] } ?? [])
            + (configuration.fraudRules.map { [FraudStage(rules: $0, outputs: ports.fraudFlags, logger: logger)] } ?? [])
    }

    public func run() async throws {
        let topic = configuration.topics.scoreEvents
        let handler = KafkaRebalanceHandler(
            onAssign: { [self] partitions in try await self.assign(partitions, topic: topic) },
            onRevoke: { [self] partitions in await self.revoke(partitions) })
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

    /// Runs the pipeline until graceful shutdown: this task polls and decodes, one child task runs the ledger
    /// transactions, another the outputs, each in batch order. A batch is retried until it is applied (or fenced): it is
    /// never skipped, and the offsets stored with it only move when it commits.
    private func consume(_ consumer: KafkaConsumer, topic: String) async {
        let (decodedBatches, toLedger) = AsyncStream<DecodedBatch>.makeStream()
        let (committedBatches, toProjector) = AsyncStream<CommittedBatch>.makeStream()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await decoded in decodedBatches {
                    if let committed = await self.commitUntilDone(decoded, topic: topic) {
                        toProjector.yield(committed)
                    } else {
                        self.inFlight.leave()
                    }
                }
                toProjector.finish()
            }
            group.addTask {
                for await committed in committedBatches {
                    await self.projectUntilDone(committed, topic: topic)
                    self.inFlight.leave()
                }
            }
            await self.poll(consumer, topic: topic, into: toLedger)
            toLedger.finish()
        }
    }

    /// Takes batches while the pipeline has room, decodes them, and hands them to the ledger step.
    private func poll(_ consumer: KafkaConsumer, topic: String, into ledger: AsyncStream<DecodedBatch>.Continuation) async {
        var batches = consumer.batches.cancelOnGracefulShutdown().makeAsyncIterator()
        var backoff = configuration.retry
        while !isStopping.load(ordering: .acquiring) {
            // The consumer hands over whatever is ready, up to its maximum, without waiting for more: batches grow while
            // the pipeline is busy and stay small when it is idle.
            await inFlight.wait(untilAtMost: max(0, configuration.pipelineDepth - 1))
            consumer.limitBatches(to: sizer.withLock { $0.limit })
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
            inFlight.enter()
            ledger.yield(decode(batch, topic: topic))
        }
    }

    /// Applies one batch end to end, each step retried while a dependency is down, until it is done, fenced, or the
    /// worker stops (then the batch is left uncommitted, to be replayed, or its outputs left in the outbox).
    func applyUntilDone(_ batch: KafkaConsumerBatch, topic: String) async {
        guard let committed = await commitUntilDone(decode(batch, topic: topic), topic: topic) else { return }
        await projectUntilDone(committed, topic: topic)
    }

    /// The ledger step, retried with capped backoff until the batch commits or is fenced (`nil`), or the worker stops
    /// (`nil`: the batch stays uncommitted, to be replayed by the partition's next owner).
    func commitUntilDone(_ decoded: DecodedBatch, topic: String) async -> CommittedBatch? {
        var backoff = configuration.retry
        var attempts = 0
        while !isStopping.load(ordering: .acquiring) {
            attempts += 1
            do {
                var committed = try await withTimeout(configuration.batchDeadline) { try await self.commit(decoded, topic: topic) }
                // Only the outages this step can see: a Redis or broker outage is the projector's to end.
                health.attemptSucceeded(ending: [.postgres, .deadline])
                // A failed attempt may have committed after all (the connection dropped during COMMIT): then this
                // one found its events applied and owes nothing itself, but that attempt's outbox rows are pending.
                committed?.projectsPendingOutbox = attempts > 1
                return committed
            } catch {
                if isStopping.load(ordering: .acquiring) { return nil }
                failed(error)
                await pause(backoff.nextDelay())
            }
        }
        return nil
    }

    /// The outputs step, retried with capped backoff until done or fenced. When the worker stops it makes one
    /// attempt more and then leaves the outbox entries to the partition's next owner.
    func projectUntilDone(_ committed: CommittedBatch, topic: String) async {
        guard !committed.outbox.isEmpty || committed.projectsPendingOutbox else { return }
        var backoff = configuration.retry
        while true {
            do {
                if committed.projectsPendingOutbox {
                    let claims = committed.epochs.map { PartitionClaim(partition: $0.key, nextOffset: 0, epoch: $0.value) }
                    try await withTimeout(configuration.batchDeadline) { try await self.recoverOutbox(claims, topic: topic) }
                }
                let projected = try await withTimeout(configuration.batchDeadline) { try await self.project(committed, topic: topic) }
                health.attemptSucceeded()
                if projected {
                    Timer(label: "worker_batch_duration_seconds").recordInterval(since: committed.start)
                } else {
                    logger.warning("outputs not projected: the partitions have a new owner, which projects them", metadata: [
                        "partitions": "\(committed.epochs.keys.sorted())",
                    ])
                    Counter(label: "worker_fenced_projections_total").increment()
                }
                return
            } catch {
                if isStopping.load(ordering: .acquiring) { return }
                failed(error)
                await pause(backoff.nextDelay())
            }
        }
    }

    private func failed(_ error: any Error) {
        health.attemptFailed(error)
        Counter(label: "worker_batch_failures_total", dimensions: [("dependency", WorkerHealth.Dependency(classifying: error).rawValue)])
            .increment()
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
        sizer.withLock { $0.restart() }
        logger.info("assigned", metadata: [
            "partitions": "\(claimed.map { "\($0.partition)@\($0.nextOffset)#\($0.epoch)" })", "kafka.topic.id": "\(topicID)",
        ])
        try await recoverOutbox(claimed, topic: topic)
        return Dictionary(uniqueKeysWithValues: claimed.map { ($0.partition, $0.nextOffset) })
    }

    /// Produces the outputs of the outbox entries left on freshly claimed partitions (a worker that stopped between a
    /// commit and its outputs), from the totals current now, before any new batch of them is read. The claim waited for
    /// the previous owner's projection in flight, and fenced out any later one. Also run by the projector after a
    /// commit that needed a retry, whose failed attempt may have committed its own rows.
    func recoverOutbox(_ claimed: [PartitionClaim], topic: String) async throws {
        let pending = try await ports.ledger.pendingOutbox(topic: topic, partitions: claimed.map(\.partition))
        guard !pending.isEmpty else { return }
        var outputs: [StagedOutputs] = []
        var recovered: [Int64] = []
        for stage in stages {
            let entries = pending.filter { $0.entry.stage == stage.name }
            guard !entries.isEmpty else { continue }
            outputs.append(try await stage.recovered(entries.map(\.entry)))
            recovered += entries.map(\.id)
        }
        // Entries of a stage this worker does not know (another version's) stay for a worker that does.
        let involved = Set(pending.map(\.entry.partition))
        let epochs = Dictionary(uniqueKeysWithValues: claimed.filter { involved.contains($0.partition) }.map { ($0.partition, $0.epoch) })
        let recoveredOutputs = outputs
        let projected = try await ports.ledger.project(topic: topic, epochs: epochs, clearing: recovered) {
            for output in recoveredOutputs { try await output.run() }
        }
        logger.info("outputs left in the outbox by the previous owner", metadata: [
            "entries": "\(recovered.count)", "partitions": "\(involved.sorted())", "projected": "\(projected)",
        ])
    }

    /// Waits (bounded) until everything taken from the revoked partitions is committed or fenced and its outputs are
    /// done, so that the partitions' next owner starts after them; a batch still stuck behind a dependency after that
    /// is fenced by the new owner's claim instead.
    func revoke(_ partitions: [KafkaTopicPartition]) async {
        await drain(reason: "revoked")
        let owned = claims.withLock { claims in
            for partition in partitions { claims.epochs[partition.partition] = nil }
            return claims.epochs.keys.sorted()
        }
        health.assigned(owned)
        logger.info("revoked", metadata: ["partitions": "\(partitions.map(\.partition))"])
    }

    private func drain(reason: String) async {
        do {
            try await withTimeout(configuration.batchDeadline) { await self.inFlight.wait(untilAtMost: 0) }
        } catch {
            logger.warning("batches still in flight: going on; epochs fence them", metadata: [
                "reason": "\(reason)", "batches": "\(inFlight.count)",
            ])
        }
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
            // The batches in flight were claimed on the old incarnation: let them finish under its epochs first.
            await drain(reason: "topic recreated")
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

    /// A batch decoded and priced, on its way to the ledger.
    struct DecodedBatch: Sendable {
        var ledgerBatch: LedgerBatch
        var deadLetters: [DeadLetter]
        /// Aggregated while the previous batch was in the ledger; the transaction reuses it when every event turns out
        /// to be new (the usual case) and aggregates again only the new ones otherwise.
        var aggregation: BatchAggregation
        var start: ContinuousClock.Instant
        /// The messages consumed (events and dead letters): what the batch limit counts.
        var messages: Int
    }

    /// A committed batch whose outputs are still owed.
    struct CommittedBatch: Sendable {
        var epochs: [Int32: Int64]
        /// Its outbox rows, cleared with the outputs.
        var outbox: [Int64]
        var outputs: [StagedOutputs]
        var start: ContinuousClock.Instant
        /// Whether to project the partitions' pending outbox rows first (an earlier attempt may have committed).
        var projectsPendingOutbox = false
    }

    /// Step 1, no I/O: parses and prices the messages, turns unreadable ones into dead letters, and pre-aggregates.
    func decode(_ batch: KafkaConsumerBatch, topic: String) -> DecodedBatch {
        let start = ContinuousClock.now
        var events: [SourcedEvent] = []
        var bans: [SourcedBan] = []
        var deadLetters: [DeadLetter] = []
        let decoder = JSONDecoder()
        for message in batch.messages {
            do {
                var event: ScoreEvent
                switch try ScoreEventsRecord.decode(Data(message.value), decoder: decoder) {
                case .event(let decoded): event = decoded
                case .ban(let ban):
                    bans.append(SourcedBan(ban: ban, partition: message.partition, offset: message.offset))
                    continue
                }
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
        let nextOffsets = Dictionary(batch.nextOffsets.map { ($0.key.partition, $0.value) }, uniquingKeysWith: max)
        let claimed = claims.withLock { $0.epochs }
        let ledgerBatch = LedgerBatch(
            topic: topic, events: events, nextOffsets: nextOffsets,
            epochs: claimed.filter { nextOffsets[$0.key] != nil }, bans: bans)
        return DecodedBatch(
            ledgerBatch: ledgerBatch, deadLetters: deadLetters, aggregation: BatchAggregation(events: events.map(\.event), catalog: catalog),
            start: start, messages: batch.messages.count)
    }

    /// Step 2, one attempt: the batch's transaction with every stage's rows. `nil` when fenced: the partition has a
    /// new owner, which resumes from the offsets this worker last committed.
    func commit(_ decoded: DecodedBatch, topic: String) async throws -> CommittedBatch? {
        let catalog = self.catalog
        let stages = self.stages
        let ahead = decoded.aggregation
        let deadLetters = decoded.deadLetters
        let partitions = Dictionary(decoded.ledgerBatch.events.map { ($0.event.eventID, $0.partition) }, uniquingKeysWith: { first, _ in first })
        let phases = PhaseClock()
        let writing = ContinuousClock.now
        let written: (outbox: [PendingOutboxEntry], due: [StagedOutputs])
        do {
            written = try await ports.ledger.apply(decoded.ledgerBatch, aggregate: { newEvents in
                // newEvents are a subset of the batch: as many distinct ids as the batch has means all of them.
                Set(newEvents.map(\.eventID)).count == ahead.events.count ? ahead : BatchAggregation(events: newEvents, catalog: catalog)
            }, reads: { applied in
                let input = StageInput(applied: applied, partitions: partitions, deadLetters: deadLetters)
                return stages.reduce(into: StageReads.none) { $0.formUnion($1.reads(for: input)) }
            }) { applied, state in
                phases.mark("ledger")
                // Inside the transaction and after the epoch check: pure work only, the row locks are held.
                let input = StageInput(applied: applied, partitions: partitions, deadLetters: deadLetters)
                let staged = try stages.map { try $0.staged(input, state: state) }
                phases.mark("stages")
                return (staged.flatMap(\.outbox), staged.reduce(into: StageWrites.none) { $0.merge($1.writes) }, staged)
            }
        } catch let fenced as LedgerFenced {
            logger.warning("batch dropped", metadata: ["reason": "\(fenced)"])
            Counter(label: "worker_fenced_batches_total").increment()
            return nil
        }
        phases.mark("commit")
        Timer(label: "worker_write_duration_seconds", dimensions: [("store", "postgres")]).recordInterval(since: writing)
        let events = decoded.ledgerBatch.events.count
        logger.debug("batch committed", metadata: ["events": "\(events)", "phases": "\(phases.summary)"])
        health.committed(events: events)
        Counter(label: "worker_events_total").increment(by: events)
        Recorder(label: "worker_batch_events").record(decoded.messages)
        // The next batches are sized by how long this one took from its poll to its commit.
        sizer.withLock { $0.record(events: decoded.messages, elapsed: .now - decoded.start) }
        return CommittedBatch(epochs: decoded.ledgerBatch.epochs, outbox: written.outbox.map(\.id), outputs: written.due, start: decoded.start)
    }

    /// Step 3, one attempt: every stage's outputs, fenced, then the outbox rows cleared. `false` when fenced.
    func project(_ committed: CommittedBatch, topic: String) async throws -> Bool {
        let outputs = committed.outputs
        let phases = PhaseClock()
        let projected = try await ports.ledger.project(topic: topic, epochs: committed.epochs, clearing: committed.outbox) {
            phases.mark("fence")
            for output in outputs { try await output.run() }
            phases.mark("outputs")
        }
        phases.mark("clear")
        logger.debug("batch projected", metadata: ["phases": "\(phases.summary)"])
        return projected
    }

    /// One attempt at a batch, end to end (each step once).
    func process(_ batch: KafkaConsumerBatch, topic: String) async throws {
        guard let committed = try await commit(decode(batch, topic: topic), topic: topic), !committed.outbox.isEmpty else { return }
        _ = try await project(committed, topic: topic)
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
