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

/// A consumer-group member over librdkafka with manual offsets.
///
/// Messages arrive as ``KafkaConsumerBatch``es through ``batches``, an `AsyncSequence` that polls librdkafka only when
/// asked for the next batch: nothing is buffered in Swift, so a slow processor holds back the poll (librdkafka's
/// bounded prefetch is the only buffer). Polling runs on the consumer's own dispatch queue, never on the cooperative
/// pool or an event loop.
public final class KafkaConsumer: Sendable {
    private let client: RDKafkaClient
    private let configuration: KafkaConsumerConfiguration
    private let logger: Logger
    /// The consumer's queue: polls and rebalance callbacks run here, one at a time.
    private let pollQueue: DispatchQueue
    private let consumerQueue: RDKafkaQueue
    private let shared: Shared

    /// State shared with the rebalance callback and the iterator.
    final class Shared: Sendable {
        let assignment = LockedBox<Set<KafkaTopicPartition>>([])
        /// An error from a rebalance handler: the next `next()` throws it.
        let pendingError = LockedBox<KafkaError?>(nil)
        let isClosed = AtomicFlag()
        /// Work that must run on the poll thread between two polls (seeks). The waiting poll loop runs it at its next
        /// turn, and `rd_kafka_queue_yield` makes that turn come at once instead of after a message arrives.
        let pollThreadWork = LockedBox<[@Sendable () -> Void]>([])

        /// Runs whatever work is queued for the poll thread. Only called on the poll queue.
        func runPollThreadWork() {
            for work in pollThreadWork.withLock({ work in defer { work.removeAll() }; return work }) { work() }
        }
    }

    /// Joins `configuration.groupID` and subscribes to `topics`.
    /// - Throws: ``KafkaError`` when the configuration is rejected or the subscription fails.
    public init(
        configuration: KafkaConsumerConfiguration, topics: [String],
        rebalanceHandler: KafkaRebalanceHandler = .committedOffsets, logger: Logger
    ) throws {
        var logger = logger
        logger[metadataKey: "kafka.client.type"] = "consumer"
        logger[metadataKey: "kafka.group.id"] = "\(configuration.groupID)"
        let shared = Shared()
        let callbacks = RDKafkaCallbacks(logger: logger) { [logger] event in
            Self.rebalance(event, handler: rebalanceHandler, shared: shared, logger: logger)
        }
        let client = try RDKafkaClient(
            kind: .consumer, properties: configuration.properties, callbacks: callbacks, label: "consumer")
        // Route the main queue's events (including rebalances) into the consumer queue we poll.
        rd_kafka_poll_set_consumer(client.handle)
        self.client = client
        self.consumerQueue = RDKafkaQueue(rd_kafka_queue_get_consumer(client.handle)!)
        self.configuration = configuration
        self.logger = logger
        self.shared = shared
        self.pollQueue = DispatchQueue(label: "scoreboard.kafka.consumer.poll")

        let list = RDKafkaTopicPartitionList.make(topics.map { (KafkaTopicPartition(topic: $0, partition: -1), 0) })
        defer { rd_kafka_topic_partition_list_destroy(list) }
        let error = rd_kafka_subscribe(client.handle, list)
        guard error == RD_KAFKA_RESP_ERR_NO_ERROR else {
            throw KafkaError.rdKafka(error, code: .consume, context: "subscribe")
        }
    }

    /// The partitions this member owns right now.
    public var assignment: Set<KafkaTopicPartition> { shared.assignment.withLock { $0 } }

    /// The consumed messages, a batch at a time. Ends when the consumer is closed or the iterating task is cancelled.
    public var batches: KafkaConsumerBatches { KafkaConsumerBatches(consumer: self) }

    // MARK: - Polling

    /// Waits for the next batch on the poll queue: the first message with a bounded wait (repeated until one arrives
    /// or the task is cancelled), then whatever else is ready, without waiting, up to `maxBatchSize`.
    func nextBatch() async throws -> KafkaConsumerBatch? {
        let cancellation = AtomicFlag()
        let consumerQueue = self.consumerQueue
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                pollQueue.async { [self] in
                    continuation.resume(with: Result { try self.pollBatchOnQueue(cancellation: cancellation) })
                }
            }
        } onCancel: {
            cancellation.set()
            // Wakes a poll that is waiting for a message, so cancellation takes effect now, not at the poll timeout.
            rd_kafka_queue_yield(consumerQueue.pointer)
        }
    }

    private func pollBatchOnQueue(cancellation: AtomicFlag) throws -> KafkaConsumerBatch? {
        let timeout = Int32(configuration.pollTimeout.milliseconds)
        let capacity = configuration.maxBatchSize
        var raw = [UnsafeMutablePointer<rd_kafka_message_t>?](repeating: nil, count: capacity)
        while true {
            shared.runPollThreadWork()
            if let error = shared.pendingError.withLock({ $0.take() }) { throw error }
            if shared.isClosed.isSet || cancellation.isSet { return nil }
            guard let first = rd_kafka_consumer_poll(client.handle, timeout) else { continue }
            raw[0] = first
            var count = 1
            if capacity > 1 {
                count += raw.withUnsafeMutableBufferPointer { buffer in
                    Int(max(0, rd_kafka_consume_batch_queue(consumerQueue.pointer, 0, buffer.baseAddress! + 1, capacity - 1)))
                }
            }
            let batch = try copyAndDestroy(raw.prefix(count))
            if !batch.messages.isEmpty { return batch }
        }
    }

    /// Copies the messages into one shared byte buffer (one allocation per batch, not two per message), then frees
    /// them. Error events are logged, or thrown when librdkafka says they are fatal.
    private func copyAndDestroy(_ raw: ArraySlice<UnsafeMutablePointer<rd_kafka_message_t>?>) throws -> KafkaConsumerBatch {
        defer { for message in raw { rd_kafka_message_destroy(message) } }
        var byteCount = 0
        for case let message? in raw where message.pointee.err == RD_KAFKA_RESP_ERR_NO_ERROR {
            byteCount += message.pointee.len + message.pointee.key_len
        }
        var storage: [UInt8] = []
        storage.reserveCapacity(byteCount)
        var spans: [(topic: String, partition: Int32, offset: Int64, key: Range<Int>?, value: Range<Int>, timestamp: Int64?)] = []
        spans.reserveCapacity(raw.count)
        // Per topic handle: its name, and which of its partitions this member still owns. Looked up by pointer and
        // partition number, so the per-message cost is no string hashing.
        var topicNames: [OpaquePointer: String] = [:]
        var owned: [PartitionSlot: Bool] = [:]
        var assignment: Set<KafkaTopicPartition>?
        for case let message? in raw {
            let pointee = message.pointee
            if pointee.err != RD_KAFKA_RESP_ERR_NO_ERROR {
                try handleErrorMessage(message)
                continue
            }
            guard let rkt = pointee.rkt else { continue }
            let topic: String
            if let known = topicNames[rkt] {
                topic = known
            } else {
                topic = String(cString: rd_kafka_topic_name(rkt))
                topicNames[rkt] = topic
            }
            // A message prefetched before its partition was revoked must not reach the processor.
            let slot = PartitionSlot(topic: rkt, partition: pointee.partition)
            let isOwned: Bool
            if let known = owned[slot] {
                isOwned = known
            } else {
                if assignment == nil { assignment = shared.assignment.withLock { $0 } }
                isOwned = assignment!.contains(KafkaTopicPartition(topic: topic, partition: pointee.partition))
                owned[slot] = isOwned
            }
            guard isOwned else { continue }
            var keyRange: Range<Int>?
            if let key = pointee.key {
                let start = storage.count
                storage.append(contentsOf: UnsafeRawBufferPointer(start: key, count: pointee.key_len))
                keyRange = start..<storage.count
            }
            let valueStart = storage.count
            if let payload = pointee.payload {
                storage.append(contentsOf: UnsafeRawBufferPointer(start: payload, count: pointee.len))
            }
            var timestampType = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
            let timestamp = rd_kafka_message_timestamp(message, &timestampType)
            spans.append((topic, pointee.partition, pointee.offset, keyRange, valueStart..<storage.count,
                          timestampType == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? nil : timestamp))
        }
        let messages = spans.map { span in
            KafkaConsumerMessage(
                topic: span.topic, partition: span.partition, offset: span.offset,
                key: span.key.map { storage[$0] }, value: storage[span.value], timestampMilliseconds: span.timestamp)
        }
        return KafkaConsumerBatch(messages: messages)
    }

    private func handleErrorMessage(_ message: UnsafeMutablePointer<rd_kafka_message_t>) throws {
        let code = message.pointee.err
        if code == RD_KAFKA_RESP_ERR__PARTITION_EOF { return }
        if code == RD_KAFKA_RESP_ERR__FATAL {
            var buffer = [CChar](repeating: 0, count: 512)
            let fatal = rd_kafka_fatal_error(client.handle, &buffer, buffer.count)
            throw KafkaError(code: .consume, rdKafkaCode: fatal.rawValue, reason: RDKafkaClient.string(from: buffer), isFatal: true)
        }
        // Transport errors and the like are retried by librdkafka itself; they are worth a line in the log.
        logger.warning("Kafka consumer error", metadata: [
            "kafka.error": "\(String(cString: rd_kafka_err2str(code)))",
            "kafka.error.name": "\(String(cString: rd_kafka_err2name(code)))",
        ])
    }

    // MARK: - Offsets

    /// Commits these offsets (the next offset to read, per partition) to the group, and waits for the broker.
    /// - Throws: ``KafkaError`` with code `commit` when the broker refuses (for example after a rebalance).
    public func commit(_ offsets: [KafkaTopicPartition: Int64]) async throws {
        guard !offsets.isEmpty else { return }
        let client = self.client
        let pairs = offsets.map { ($0.key, $0.value) }
        try await client.onBlockingQueue {
            let list = RDKafkaTopicPartitionList.make(pairs)
            defer { rd_kafka_topic_partition_list_destroy(list) }
            let error = rd_kafka_commit(client.handle, list, 0)
            guard error == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError.rdKafka(error, code: .commit) }
            for (partition, _, partitionError) in RDKafkaTopicPartitionList.read(list)
            where partitionError != RD_KAFKA_RESP_ERR_NO_ERROR {
                throw KafkaError.rdKafka(partitionError, code: .commit, context: partition.description)
            }
        }
    }

    /// The offsets the group has committed for these partitions (`nil` where there is none).
    public func committedOffsets(for partitions: [KafkaTopicPartition], timeout: Duration = .seconds(10))
        async throws -> [KafkaTopicPartition: Int64?]
    {
        let client = self.client
        return try await client.onBlockingQueue {
            let list = RDKafkaTopicPartitionList.make(partitions.map { ($0, Int64(RD_KAFKA_OFFSET_INVALID)) })
            defer { rd_kafka_topic_partition_list_destroy(list) }
            let error = rd_kafka_committed(client.handle, list, Int32(timeout.milliseconds))
            guard error == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError.rdKafka(error, code: .commit) }
            var result: [KafkaTopicPartition: Int64?] = [:]
            for (partition, offset, _) in RDKafkaTopicPartitionList.read(list) { result[partition] = offset >= 0 ? offset : nil }
            return result
        }
    }

    /// Moves the read position of assigned partitions: the next batch starts at these offsets.
    /// - Throws: ``KafkaError`` with code `seek`, for example for a partition this member does not own.
    public func seek(_ offsets: [KafkaTopicPartition: Int64], timeout: Duration = .seconds(10)) async throws {
        let client = self.client
        let pairs = offsets.map { ($0.key, $0.value) }
        // Runs on the poll thread between two polls, so that no poll is in progress while positions change. A poll
        // may be waiting for a message right now (a pending `next()`): the work goes into the poll loop's mailbox,
        // and both that loop and an idle poll queue pick it up, whichever comes first.
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
            // Each closure in the mailbox is taken out once, under its lock: it runs exactly once.
            shared.pollThreadWork.withLock { work in
                work.append {
                    continuation.resume(with: Result {
                        let list = RDKafkaTopicPartitionList.make(pairs)
                        defer { rd_kafka_topic_partition_list_destroy(list) }
                        if let error = rd_kafka_seek_partitions(client.handle, list, Int32(timeout.milliseconds)) {
                            defer { rd_kafka_error_destroy(error) }
                            throw KafkaError.rdKafka(errorObject: error, code: .seek)
                        }
                        for (partition, _, partitionError) in RDKafkaTopicPartitionList.read(list)
                        where partitionError != RD_KAFKA_RESP_ERR_NO_ERROR {
                            throw KafkaError.rdKafka(partitionError, code: .seek, context: partition.description)
                        }
                    })
                }
            }
            rd_kafka_queue_yield(consumerQueue.pointer)
            pollQueue.async { [shared] in shared.runPollThreadWork() }
        }
    }

    // MARK: - Lag

    /// How far behind the log end this member is on each partition it owns: the broker's high watermark (as last
    /// reported in a fetch response, so no request is made) minus the position of the next message to read.
    /// Partitions with no position or watermark yet are left out. Thread-safe and non-blocking.
    /// - Note: The local memory broker (Tansu 0.6) under-reports its high watermark, so against it this is a lower
    ///   bound; Apache Kafka reports it exactly.
    public func lag() -> [KafkaTopicPartition: Int64] {
        let owned = Array(shared.assignment.withLock { $0 })
        guard !owned.isEmpty else { return [:] }
        let list = RDKafkaTopicPartitionList.make(owned.map { ($0, Int64(RD_KAFKA_OFFSET_INVALID)) })
        defer { rd_kafka_topic_partition_list_destroy(list) }
        guard rd_kafka_position(client.handle, list) == RD_KAFKA_RESP_ERR_NO_ERROR else { return [:] }
        var result: [KafkaTopicPartition: Int64] = [:]
        for (partition, position, _) in RDKafkaTopicPartitionList.read(list) where position >= 0 {
            var low: Int64 = -1
            var high: Int64 = -1
            guard rd_kafka_get_watermark_offsets(client.handle, partition.topic, partition.partition, &low, &high)
                == RD_KAFKA_RESP_ERR_NO_ERROR, high >= 0 else { continue }
            result[partition] = max(0, high - position)
        }
        return result
    }

    // MARK: - Closing

    /// Leaves the group (running `onRevoke` for what it owns) and ends ``batches``. Safe to call twice.
    public func close() async {
        guard shared.isClosed.set() else { return }
        let client = self.client
        let logger = self.logger
        rd_kafka_queue_yield(consumerQueue.pointer)
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            pollQueue.async {
                let error = rd_kafka_consumer_close(client.handle)
                if error != RD_KAFKA_RESP_ERR_NO_ERROR {
                    logger.warning("Kafka consumer close failed", metadata: ["kafka.error": "\(String(cString: rd_kafka_err2str(error)))"])
                }
                continuation.resume()
            }
        }
        logger.info("Kafka consumer closed")
    }

    // MARK: - Rebalancing

    /// Runs on the poll queue inside librdkafka's poll. Blocking it while the Swift handler runs is the point: the
    /// assignment must be settled (and offsets fetched from wherever they live) before the next message is read.
    private static func rebalance(
        _ event: RDKafkaCallbacks.RebalanceEvent, handler: KafkaRebalanceHandler, shared: Shared, logger: Logger
    ) {
        switch event {
        case .assign(let list, let handle):
            let partitions = RDKafkaTopicPartitionList.read(list).map(\.0)
            logger.info("Kafka partitions assigned", metadata: ["kafka.partitions": "\(partitions.map(\.description))"])
            let outcome = runBlocking { try await handler.onAssign(partitions) }
            switch outcome {
            case .success(let starts):
                for index in 0..<Int(list.pointee.cnt) {
                    let element = list.pointee.elems + index
                    let partition = KafkaTopicPartition(topic: String(cString: element.pointee.topic), partition: element.pointee.partition)
                    element.pointee.offset = RDKafkaTopicPartitionList.rawOffset(starts[partition] ?? .committed)
                }
                shared.assignment.withLock { $0 = Set(partitions) }
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
            _ = runBlocking { await handler.onRevoke(partitions) }
            _ = rd_kafka_assign(handle, nil)
        case .error(let error, let handle):
            logger.warning("Kafka rebalance error", metadata: ["kafka.error": "\(String(cString: rd_kafka_err2str(error)))"])
            _ = rd_kafka_assign(handle, nil)
            shared.assignment.withLock { $0 = [] }
        }
    }

    /// Bridges an async handler into librdkafka's synchronous callback. Only ever called on the consumer's own poll
    /// queue (a Dispatch thread), never from the cooperative pool, so waiting here cannot starve Swift tasks.
    private static func runBlocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) -> Result<T, Error> {
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

/// A partition of a topic handle, as librdkafka names it in a message.
private struct PartitionSlot: Hashable {
    let topic: OpaquePointer
    let partition: Int32
}

/// The batches of a ``KafkaConsumer``, polled on demand.
public struct KafkaConsumerBatches: AsyncSequence, Sendable {
    public typealias Element = KafkaConsumerBatch
    let consumer: KafkaConsumer

    public struct AsyncIterator: AsyncIteratorProtocol {
        let consumer: KafkaConsumer
        public mutating func next() async throws -> KafkaConsumerBatch? {
            try await consumer.nextBatch()
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(consumer: consumer) }
}


