import CRdKafka
import Dispatch
import Logging
import Synchronization

/// A consumer-group member over librdkafka with manual offsets.
///
/// Messages arrive as ``KafkaConsumerBatch``es through ``batches``, an `AsyncSequence` that polls librdkafka only when
/// asked for the next batch: nothing is buffered in Swift, so a slow processor holds back the poll (librdkafka's
/// bounded prefetch is the only buffer). Polling runs on the consumer's own dispatch queue, never on the cooperative
/// pool or an event loop.
public final class KafkaConsumer: Sendable {
    let client: RDKafkaClient
    let configuration: KafkaConsumerConfiguration
    let logger: Logger
    /// The consumer's queue: polls and rebalance callbacks run here, one at a time.
    let pollQueue: DispatchQueue
    let consumerQueue: RDKafkaQueue
    let shared: Shared
    /// The topics this member subscribed to (``rejoinGroup()`` subscribes to them again).
    let subscription: [String]

    /// State shared with the rebalance callback and the iterator.
    final class Shared: Sendable {
        let assignment = LockedBox<Set<KafkaTopicPartition>>([])
        /// Where each owned partition was last told to start (at assignment, or by a seek). librdkafka reports no
        /// position for a partition until a message of it was consumed, and a consumer that cannot fetch consumes
        /// none: ``lag()`` then counts from here, so that a stalled consumer still shows its lag.
        let startOffsets = LockedBox<[KafkaTopicPartition: Int64]>([:])
        /// An error from a rebalance handler: the next `next()` throws it.
        let pendingError = LockedBox<KafkaError?>(nil)
        let isClosed = AtomicFlag()
        /// Work that must run on the poll thread between two polls (seeks). The waiting poll loop runs it at its next
        /// turn, and `rd_kafka_queue_yield` makes that turn come at once instead of after a message arrives.
        let pollThreadWork = LockedBox<[@Sendable () -> Void]>([])
        /// The most messages the next batch may hold (``limitBatches(to:)``), at most `maxBatchSize`.
        let batchLimit: Atomic<Int>

        init(batchLimit: Int) {
            self.batchLimit = Atomic(batchLimit)
        }

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
        let shared = Shared(batchLimit: configuration.maxBatchSize)
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
        self.subscription = topics
        try Self.subscribe(client: client, topics: topics)
    }

    static func subscribe(client: RDKafkaClient, topics: [String]) throws {
        let list = RDKafkaTopicPartitionList.make(topics.map { (KafkaTopicPartition(topic: $0, partition: -1), 0) })
        defer { rd_kafka_topic_partition_list_destroy(list) }
        let error = rd_kafka_subscribe(client.handle, list)
        guard error == RD_KAFKA_RESP_ERR_NO_ERROR else {
            throw KafkaError.rdKafka(error, code: .consume, context: "subscribe")
        }
    }

    /// The partitions this member owns right now.
    public var assignment: Set<KafkaTopicPartition> { shared.assignment.withLock { $0 } }

    /// Caps the batches polled from now on at `messages` (between 1 and the configuration's `maxBatchSize`). A
    /// processor that must finish a batch within some time (before the next rebalance, say) sizes its batches by
    /// its own recent speed instead of taking everything that is ready.
    public func limitBatches(to messages: Int) {
        shared.batchLimit.store(min(max(1, messages), configuration.maxBatchSize), ordering: .relaxed)
    }

    /// The current cap on a batch's messages.
    public var batchLimit: Int { shared.batchLimit.load(ordering: .relaxed) }

    /// The consumed messages, a batch at a time. Ends when the consumer is closed or the iterating task is cancelled.
    public var batches: KafkaConsumerBatches { KafkaConsumerBatches(consumer: self) }

    // MARK: - Polling

    /// Waits for the next batch on the poll queue: the first message with a bounded wait (repeated until one arrives
    /// or the task is cancelled), then whatever else is ready, without waiting, up to ``batchLimit``.
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
        var raw = [UnsafeMutablePointer<rd_kafka_message_t>?](repeating: nil, count: configuration.maxBatchSize)
        while true {
            let capacity = shared.batchLimit.load(ordering: .relaxed)
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


