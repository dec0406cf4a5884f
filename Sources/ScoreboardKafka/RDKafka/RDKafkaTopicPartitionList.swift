import CRdKafka

/// Converts between Swift partition sets and `rd_kafka_topic_partition_list_t`.
enum RDKafkaTopicPartitionList {
    /// Makes a new list the caller must destroy with `rd_kafka_topic_partition_list_destroy`.
    static func make(_ offsets: [(KafkaTopicPartition, Int64)]) -> UnsafeMutablePointer<rd_kafka_topic_partition_list_t> {
        let list = rd_kafka_topic_partition_list_new(Int32(offsets.count))!
        for (topicPartition, offset) in offsets {
            let element = rd_kafka_topic_partition_list_add(list, topicPartition.topic, topicPartition.partition)!
            element.pointee.offset = offset
        }
        return list
    }

    static func read(_ list: UnsafePointer<rd_kafka_topic_partition_list_t>) -> [(KafkaTopicPartition, Int64, rd_kafka_resp_err_t)] {
        let count = Int(list.pointee.cnt)
        var result: [(KafkaTopicPartition, Int64, rd_kafka_resp_err_t)] = []
        result.reserveCapacity(count)
        for index in 0..<count {
            let element = list.pointee.elems[index]
            result.append((KafkaTopicPartition(topic: String(cString: element.topic), partition: element.partition),
                           element.offset, element.err))
        }
        return result
    }

    static func rawOffset(_ start: KafkaStartOffset) -> Int64 {
        switch start {
        case .committed: return Int64(RD_KAFKA_OFFSET_STORED)
        case .beginning: return Int64(RD_KAFKA_OFFSET_BEGINNING)
        case .end: return Int64(RD_KAFKA_OFFSET_END)
        case .offset(let value): return value
        }
    }
}
