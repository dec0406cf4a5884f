import Foundation
import Logging
import Metrics
import ScoreboardCore
import ScoreboardKafka
import ServiceLifecycle
import Synchronization

/// The fraud stage's second input: the rejections topic (refused requests of known users: forged and replayed action
/// tokens for the token-manipulation rule), read by a consumer of its own in the worker process.
///
/// Why a consumer of its own, and how it stays exactly once: rejections are not score events (they have no totals,
/// no boards), but their effect on a user's fraud profile must commit with the position they were read to, as the
/// events' does. So this consumer uses the ledger exactly as the score worker does, on its own topic: it claims its
/// partitions (`consumer_offsets`, bumping the epochs that fence a previous owner) and resumes from the offsets
/// stored there; each batch is one ``WorkerLedger/apply(_:aggregate:reads:beforeCommit:)`` with no events, whose stage
/// rows are the fraud stage's for the rejections (profiles, population, flag records, outbox) and whose offsets are
/// the rejections'; the flags are published after commit from the outbox, recovered by the partition's next owner
/// as the score worker recovers its own. A replay after a crash starts from the offsets committed with the profiles,
/// so no rejection counts twice (and the detector also ignores a rejection id it has seen). A user's events and
/// rejections lock the same profile row, so the two consumers take turns on it.
///
/// The same transaction adds every rejection (with or without a user) to the analytics cells of the `rejections`
/// metrics (refused requests per minute, hour and day, by problem type: ``AnalyticsAggregation``), so they too count
/// each rejection once. Either part may be absent: a worker without fraud rules runs this consumer for the analytics.
final class FraudRejectionConsumer: Service, Sendable {
    let topic: String
    let consumer: KafkaConsumerConfiguration
    /// `nil`: no fraud rules; the rejections are only counted.
    let stage: FraudStage?
    let analytics: AnalyticsCatalog
    let ports: WorkerPorts
    let catalog: LeaderboardCatalog
    let retry: RetryBackoff
    let batchDeadline: Duration
    let logger: Logger
    /// Each owned partition's epoch, as claimed.
    let epochs = Mutex<[Int32: Int64]>([:])

    init(
        topic: String, consumer: KafkaConsumerConfiguration, stage: FraudStage?, analytics: AnalyticsCatalog = .empty, ports: WorkerPorts,
        catalog: LeaderboardCatalog, retry: RetryBackoff, batchDeadline: Duration, logger: Logger
    ) {
        self.topic = topic
        self.consumer = consumer
        self.stage = stage
        self.analytics = analytics
        self.ports = ports
        self.catalog = catalog
        self.retry = retry
        self.batchDeadline = batchDeadline
        self.logger = logger
    }

    /// Reads and applies batches until graceful shutdown. A consumer that cannot be created (no broker at all) is
    /// retried: the score path does not depend on this one.
    func run() async {
        var backoff = retry
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                let handler = KafkaRebalanceHandler(
                    onAssign: { [self] partitions in try await assign(partitions.map(\.partition)) },
                    onRevoke: { [self] partitions in epochs.withLock { for partition in partitions { $0[partition.partition] = nil } } })
                let kafka = try KafkaConsumer(configuration: consumer, topics: [topic], rebalanceHandler: handler, logger: logger)
                for try await batch in kafka.batches.cancelOnGracefulShutdown() {
                    backoff.reset()
                    await applyUntilDone(batch)
                }
                await kafka.close()
                return
            } catch {
                logger.error("the rejections consumer failed: starting it again", metadata: ["error": "\(error)"])
                let delay = backoff.nextDelay()
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) }
            }
        }
    }

    /// Claims the partitions (fencing out their previous owner), publishes what its outbox still owes, and returns
    /// where each resumes: the offset committed with the profiles.
    func assign(_ partitions: [Int32]) async throws -> [KafkaTopicPartition: KafkaStartOffset] {
        guard !partitions.isEmpty else { return [:] }
        var backoff = retry
        while true {
            do {
                let claimed = try await withTimeout(batchDeadline) { try await self.claim(partitions) }
                return Dictionary(uniqueKeysWithValues: claimed.map { (KafkaTopicPartition(topic: topic, partition: $0.partition), .offset($0.nextOffset)) })
            } catch {
                if Task.isShuttingDownGracefully || Task.isCancelled { throw error }
                logger.warning("claiming rejections partitions failed: retrying", metadata: ["error": "\(error)"])
                try await Task.sleep(for: backoff.nextDelay())
            }
        }
    }

    private func claim(_ partitions: [Int32]) async throws -> [PartitionClaim] {
        guard let topicID = try await ports.topics.topicID(of: topic) else { throw TopicMissing(topic: topic) }
        let claimed = try await ports.ledger.claim(topic: topic, topicID: topicID, partitions: partitions)
        epochs.withLock { for claim in claimed { $0[claim.partition] = claim.epoch } }
        let pending = try await ports.ledger.pendingOutbox(topic: topic, partitions: claimed.map(\.partition)).filter { $0.entry.stage == stage?.name }
        if let stage, !pending.isEmpty {
            let due = try await stage.recover(pending.map(\.entry))
            let involved = Set(pending.map(\.entry.partition))
            let fence = Dictionary(uniqueKeysWithValues: claimed.filter { involved.contains($0.partition) }.map { ($0.partition, $0.epoch) })
            _ = try await ports.ledger.project(topic: topic, epochs: fence, clearing: pending.map(\.id)) { try await stage.outputs(due) }
        }
        logger.info("rejections partitions assigned", metadata: ["partitions": "\(claimed.map { "\($0.partition)@\($0.nextOffset)#\($0.epoch)" })"])
        return claimed
    }

    /// One batch, retried while a dependency is down, until it is applied, fenced (another worker owns a partition
    /// now: it starts from the offsets this one committed) or the worker stops.
    func applyUntilDone(_ batch: KafkaConsumerBatch) async {
        var backoff = retry
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                try await withTimeout(batchDeadline) { try await self.apply(batch) }
                return
            } catch let fenced as LedgerFenced {
                logger.warning("rejections batch dropped", metadata: ["reason": "\(fenced)"])
                return
            } catch {
                logger.warning("rejections batch failed: retrying", metadata: ["error": "\(error)"])
                let delay = backoff.nextDelay()
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) }
            }
        }
    }

    /// One attempt: the fraud stage's rows for the batch's rejections, their analytics counts and the batch's offsets
    /// in one transaction, then the flags published (fenced by the epochs) and the outbox cleared.
    func apply(_ batch: KafkaConsumerBatch) async throws {
        let decoder = JSONDecoder()
        var rejections: [Rejection] = []
        var signals: [FraudRejectionSignal] = []
        var partitions: [String: Int32] = [:]
        for message in batch.messages {
            // An unreadable message is skipped (the gateway wrote it; it is no event that a dead letter must keep).
            guard let rejection = try? decoder.decode(Rejection.self, from: Data(message.value)) else { continue }
            rejections.append(rejection)
            // A rejection without a user (refused before authentication) cannot be pinned on anyone: counted only.
            guard let signal = FraudRejectionSignal(rejection) else { continue }
            signals.append(signal)
            partitions[signal.rejectionID] = message.partition
        }
        let nextOffsets = Dictionary(batch.nextOffsets.map { ($0.key.partition, $0.value) }, uniquingKeysWith: max)
        let claimed = epochs.withLock { $0 }.filter { nextOffsets[$0.key] != nil }
        let ledgerBatch = LedgerBatch(topic: topic, events: [], nextOffsets: nextOffsets, epochs: claimed)
        let (stage, catalog, read, sources) = (stage, catalog, signals, partitions)
        let counted = AnalyticsAggregation.writes(forRejections: rejections, catalog: analytics)
        let written = try await ports.ledger.apply(
            ledgerBatch, aggregate: { BatchAggregation(events: $0, catalog: catalog) }, reads: { _ in stage?.reads(forRejections: read) ?? .none }
        ) { _, state in
            var writes = counted
            guard let stage else { return (outbox: [], writes: writes, due: nil as FraudStage.Due?) }
            let rows = try stage.rows(forRejections: read, partitions: sources, state: state)
            writes.merge(rows.writes)
            return (outbox: rows.outbox, writes: writes, due: rows.due as FraudStage.Due?)
        }
        Counter(label: "worker_fraud_rejections_total").increment(by: signals.count)
        Counter(label: "worker_rejections_counted_total").increment(by: rejections.count)
        guard let stage, let due = written.due, !written.outbox.isEmpty else { return }
        _ = try await ports.ledger.project(topic: topic, epochs: claimed, clearing: written.outbox.map(\.id)) { try await stage.outputs(due) }
    }
}
