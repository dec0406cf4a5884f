import CRdKafka
import Dispatch
import Logging
import Synchronization

extension KafkaConsumer {
    /// Copies the messages into one shared byte buffer (one allocation per batch, not two per message), then frees
    /// them. Error events are logged, or thrown when librdkafka says they are fatal.
    func copyAndDestroy(_ raw: ArraySlice<UnsafeMutablePointer<rd_kafka_message_t>?>) throws -> KafkaConsumerBatch {
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

    func handleErrorMessage(_ message: UnsafeMutablePointer<rd_kafka_message_t>) throws {
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
}

/// A partition of a topic handle, as librdkafka names it in a message.
struct PartitionSlot: Hashable {
    let topic: OpaquePointer
    let partition: Int32
}
