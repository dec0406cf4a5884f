import CRdKafka
import Dispatch
import Logging
import Synchronization

/// What a consumer's owner decides when the group hands it partitions or takes them away.
///
/// librdkafka calls these from inside a poll, between two batches, so the batch in hand has been fully processed when
/// `onRevoke` runs. `onAssign` returns where to start each partition: `.offset(n)` for offsets stored outside Kafka
/// (the exactly-once design keeps them in PostgreSQL beside the results), `.committed` for Kafka's own.
public struct KafkaRebalanceHandler: Sendable {
    public var onAssign: @Sendable ([KafkaTopicPartition]) async throws -> [KafkaTopicPartition: KafkaStartOffset]
    public var onRevoke: @Sendable ([KafkaTopicPartition]) async -> Void

    public init(
        onAssign: @escaping @Sendable ([KafkaTopicPartition]) async throws -> [KafkaTopicPartition: KafkaStartOffset],
        onRevoke: @escaping @Sendable ([KafkaTopicPartition]) async -> Void = { _ in }
    ) {
        self.onAssign = onAssign
        self.onRevoke = onRevoke
    }

    /// Starts every assigned partition from the group's committed offset.
    public static let committedOffsets = KafkaRebalanceHandler(onAssign: { partitions in
        Dictionary(uniqueKeysWithValues: partitions.map { ($0, KafkaStartOffset.committed) })
    })
}

extension KafkaConsumer {
    // MARK: - Rebalancing

    /// Runs on the poll queue inside librdkafka's poll. Blocking it while the Swift handler runs is the point: the
    /// assignment must be settled (and offsets fetched from wherever they live) before the next message is read.
    static func rebalance(
        _ event: RDKafkaCallbacks.RebalanceEvent, handler: KafkaRebalanceHandler, shared: Shared, logger: Logger
    ) {
        switch event {
        case .assign(let list, let handle):
            let partitions = RDKafkaTopicPartitionList.read(list).map(\.0)
            logger.info("Kafka partitions assigned", metadata: ["kafka.partitions": "\(partitions.map(\.description))"])
            let outcome = runBlocking { try await handler.onAssign(partitions) }
            switch outcome {
            case .success(let starts):
                var startOffsets: [KafkaTopicPartition: Int64] = [:]
                for index in 0..<Int(list.pointee.cnt) {
                    let element = list.pointee.elems + index
                    let partition = KafkaTopicPartition(topic: String(cString: element.pointee.topic), partition: element.pointee.partition)
                    element.pointee.offset = RDKafkaTopicPartitionList.rawOffset(starts[partition] ?? .committed)
                    if element.pointee.offset >= 0 { startOffsets[partition] = element.pointee.offset }
                }
                shared.assignment.withLock { $0 = Set(partitions) }
                shared.startOffsets.withLock { $0 = startOffsets }
                let error = rd_kafka_assign(handle, list)
                if error != RD_KAFKA_RESP_ERR_NO_ERROR {
                    shared.pendingError.withLock { $0 = .rdKafka(error, code: .rebalance, context: "assign") }
                }
            case .failure(let error):
                // Without start offsets we must not read: own nothing, and let the owner see the error.
                logger.error("Kafka assignment handler failed", metadata: ["error": "\(error)"])
                _ = rd_kafka_assign(handle, nil)
                shared.assignment.withLock { $0 = [] }
                shared.pendingError.withLock {
                    $0 = error as? KafkaError ?? KafkaError(code: .rebalance, reason: "assignment handler failed: \(error)")
                }
            }
        case .revoke(let list, let handle):
            let partitions = RDKafkaTopicPartitionList.read(list).map(\.0)
            logger.info("Kafka partitions revoked", metadata: ["kafka.partitions": "\(partitions.map(\.description))"])
            shared.assignment.withLock { $0 = [] }
            shared.startOffsets.withLock { $0 = [:] }
            _ = runBlocking { await handler.onRevoke(partitions) }
            _ = rd_kafka_assign(handle, nil)
        case .error(let error, let handle):
            logger.warning("Kafka rebalance error", metadata: ["kafka.error": "\(String(cString: rd_kafka_err2str(error)))"])
            _ = rd_kafka_assign(handle, nil)
            shared.assignment.withLock { $0 = [] }
        }
    }

    /// Asks to leave the group and join it again as a new member, which makes the whole group rebalance: the leader
    /// assigns from fresh metadata and every member's `onRevoke` and `onAssign` run again. Returns at once; the poll
    /// thread does it between two polls (after an `onAssign` still running, which may wait for a dependency).
    ///
    /// For a group whose assignment no longer matches the topic. A memory-only broker that restarts forgets the group
    /// as well as the log; when the members join the new broker before `topics apply` has recreated the topic, the
    /// leader assigns nothing, and when the topic reappears with the partition count librdkafka still remembers from
    /// before, it sees no change and never rebalances: the group stays idle on a live topic. Rejoining under the same
    /// member id would not help (the coordinator answers a follower that rejoins with unchanged metadata with the
    /// current, empty, assignment), so this leaves first.
    public func rejoinGroup() {
        let client = self.client
        let topics = subscription
        let logger = self.logger
        schedulePollThreadWork { [shared] in
            guard !shared.isClosed.isSet else { return }
            logger.info("leaving and rejoining the consumer group", metadata: ["kafka.topics": "\(topics)"])
            do {
                let error = rd_kafka_unsubscribe(client.handle)
                guard error == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError.rdKafka(error, code: .rebalance, context: "unsubscribe") }
                try Self.subscribe(client: client, topics: topics)
            } catch {
                // Not subscribed any more: the consumer would read nothing. The owner sees the error at its next batch.
                logger.error("rejoining the consumer group failed", metadata: ["error": "\(error)"])
                shared.pendingError.withLock { $0 = error as? KafkaError ?? KafkaError(code: .rebalance, reason: "\(error)") }
            }
        }
    }

    /// Bridges an async handler into librdkafka's synchronous callback. Only ever called on the consumer's own poll
    /// queue (a Dispatch thread), never from the cooperative pool, so waiting here cannot starve Swift tasks.
    static func runBlocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) -> Result<T, Error> {
        let done = DispatchSemaphore(value: 0)
        let result = LockedBox<Result<T, Error>?>(nil)
        Task {
            let outcome: Result<T, Error>
            do { outcome = .success(try await body()) } catch { outcome = .failure(error) }
            result.withLock { $0 = outcome }
            done.signal()
        }
        done.wait()
        return result.withLock { $0! }
    }
}
