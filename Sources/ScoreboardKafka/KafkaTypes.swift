/// A topic and one of its partitions.
public struct KafkaTopicPartition: Hashable, Sendable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32

    public init(topic: String, partition: Int32) {
        self.topic = topic
        self.partition = partition
    }

    public var description: String { "\(topic)[\(partition)]" }
}

/// Where a consumer starts reading an assigned partition.
public enum KafkaStartOffset: Hashable, Sendable {
    /// The offset committed to Kafka for the group, or `auto.offset.reset` when there is none.
    case committed
    /// The first offset still in the log.
    case beginning
    /// Only messages produced from now on.
    case end
    /// This exact offset: the next message to read. Used for offsets stored outside Kafka.
    case offset(Int64)
}

/// A message to produce. Key and value are bytes; the scoreboard's events are JSON.
public struct KafkaProducerMessage: Sendable {
    public var topic: String
    /// `nil` lets the partitioner choose from the key (murmur2, as Java clients do), so one key stays on one partition.
    public var partition: Int32?
    public var key: [UInt8]?
    public var value: [UInt8]
    /// Milliseconds since the epoch; `nil` lets librdkafka stamp the send time.
    public var timestampMilliseconds: Int64?

    public init(topic: String, partition: Int32? = nil, key: [UInt8]?, value: [UInt8], timestampMilliseconds: Int64? = nil) {
        self.topic = topic
        self.partition = partition
        self.key = key
        self.value = value
        self.timestampMilliseconds = timestampMilliseconds
    }

    public init(topic: String, partition: Int32? = nil, key: String?, value: String) {
        self.init(topic: topic, partition: partition, key: key.map { Array($0.utf8) }, value: Array(value.utf8))
    }
}

/// What the broker acknowledged for one produced message.
public struct KafkaDeliveryReport: Hashable, Sendable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
}

/// One consumed message. Key and value are slices of the batch's shared storage: no copy per message.
public struct KafkaConsumerMessage: Sendable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    public var key: ArraySlice<UInt8>?
    public var value: ArraySlice<UInt8>
    /// Milliseconds since the epoch, as the producer (or broker) stamped it; `nil` when the message has none.
    public var timestampMilliseconds: Int64?

    public var topicPartition: KafkaTopicPartition { .init(topic: topic, partition: partition) }
}

/// Messages taken from the consumer in one poll, in partition order.
public struct KafkaConsumerBatch: Sendable {
    public var messages: [KafkaConsumerMessage]

    /// For each partition in the batch, the offset to store or commit after processing it: the last offset + 1.
    public var nextOffsets: [KafkaTopicPartition: Int64] {
        var result: [KafkaTopicPartition: Int64] = [:]
        for message in messages {
            let key = message.topicPartition
            result[key] = max(result[key] ?? 0, message.offset + 1)
        }
        return result
    }
}
