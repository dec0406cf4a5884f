import CRdKafka
import Dispatch
import Logging
import Synchronization

extension KafkaConsumer {
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
        let shared = self.shared
        try await onPollThread {
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
            shared.startOffsets.withLock { starts in for (partition, offset) in pairs where offset >= 0 { starts[partition] = offset } }
        }
    }

    /// Runs `body` on the poll thread between two polls (``schedulePollThreadWork(_:)``) and returns its result.
    func onPollThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, Error>) in
            schedulePollThreadWork { continuation.resume(with: Result { try body() }) }
        }
    }

    /// Queues `work` for the poll thread, to run between two polls, so that no poll is in progress while it changes
    /// positions or the subscription. A poll may be waiting for a message right now (a pending `next()`): the work
    /// goes into the poll loop's mailbox, and both that loop and an idle poll queue pick it up, whichever comes first.
    func schedulePollThreadWork(_ work: @escaping @Sendable () -> Void) {
        // Each closure in the mailbox is taken out once, under its lock: it runs exactly once.
        shared.pollThreadWork.withLock { $0.append(work) }
        rd_kafka_queue_yield(consumerQueue.pointer)
        pollQueue.async { [shared] in shared.runPollThreadWork() }
    }

    // MARK: - Lag

    /// How far behind the log end this member is on each partition it owns: the broker's high watermark (as last
    /// reported in a fetch response, so no request is made) minus the position of the next message to read.
    /// A partition with no position yet counts from the offset it was told to start at; partitions with no watermark
    /// yet are left out. Thread-safe and non-blocking.
    /// - Note: The local memory broker (Tansu 0.6) under-reports its high watermark, so against it this is a lower
    ///   bound; Apache Kafka reports it exactly.
    public func lag() -> [KafkaTopicPartition: Int64] {
        let owned = Array(shared.assignment.withLock { $0 })
        guard !owned.isEmpty else { return [:] }
        let list = RDKafkaTopicPartitionList.make(owned.map { ($0, Int64(RD_KAFKA_OFFSET_INVALID)) })
        defer { rd_kafka_topic_partition_list_destroy(list) }
        guard rd_kafka_position(client.handle, list) == RD_KAFKA_RESP_ERR_NO_ERROR else { return [:] }
        var result: [KafkaTopicPartition: Int64] = [:]
        let starts = shared.startOffsets.withLock { $0 }
        for (partition, reported, _) in RDKafkaTopicPartitionList.read(list) {
            // No position until a message of the partition was consumed: count from where it was told to start.
            guard let position = reported >= 0 ? reported : starts[partition] else { continue }
            var low: Int64 = -1
            var high: Int64 = -1
            guard rd_kafka_get_watermark_offsets(client.handle, partition.topic, partition.partition, &low, &high)
                == RD_KAFKA_RESP_ERR_NO_ERROR, high >= 0 else { continue }
            result[partition] = max(0, high - position)
        }
        return result
    }
}
