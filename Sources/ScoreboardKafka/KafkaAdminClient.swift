import CRdKafka
import Foundation
import Logging

/// A topic to create.
public struct KafkaNewTopic: Sendable, Hashable {
    public var name: String
    public var partitions: Int32
    public var replicationFactor: Int32
    /// Topic-level configs, for example `retention.ms` and `cleanup.policy`.
    public var configs: [String: String]

    public init(name: String, partitions: Int32, replicationFactor: Int32 = 1, configs: [String: String] = [:]) {
        self.name = name
        self.partitions = partitions
        self.replicationFactor = replicationFactor
        self.configs = configs
    }
}

/// What the cluster says about a topic.
public struct KafkaTopicDescription: Sendable, Hashable {
    public var name: String
    /// The topic id (base64). It changes when a topic is deleted and created again, or when a memory-only broker
    /// restarts: stored beside offsets, it tells a new incarnation of the log from the old one.
    public var topicID: String
    public var partitionCount: Int
}

/// The outcome of creating one topic.
public enum KafkaTopicCreation: Sendable, Hashable {
    case created
    case alreadyExists
}

/// Cluster metadata: the brokers and what this client sees of them.
public struct KafkaClusterMetadata: Sendable {
    public struct Broker: Sendable, Hashable {
        public var id: Int32
        public var host: String
        public var port: Int32
    }

    public var brokers: [Broker]
    public var topicNames: [String]
    public var originatingBrokerID: Int32
}

/// Creates and describes topics.
public final class KafkaAdminClient: Sendable {
    private let client: RDKafkaClient
    private let logger: Logger

    /// - Throws: ``KafkaError`` when the configuration is rejected or the runtime is too old.
    public init(configuration: KafkaClientConfiguration, logger: Logger) throws {
        var logger = logger
        logger[metadataKey: "kafka.client.type"] = "admin"
        self.logger = logger
        var properties = configuration.properties.merging(configuration.additionalProperties) { _, new in new }
        properties["client.id"] = "\(configuration.clientID)-admin"
        client = try RDKafkaClient(kind: .producer, properties: properties, callbacks: RDKafkaCallbacks(logger: logger), label: "admin")
    }

    /// Creates the topics that do not exist; existing ones are reported as such and left as they are.
    public func createTopics(_ topics: [KafkaNewTopic], timeout: Duration = .seconds(30)) async throws -> [String: KafkaTopicCreation] {
        guard !topics.isEmpty else { return [:] }
        let client = self.client
        return try await client.onBlockingQueue {
            var errorBuffer = [CChar](repeating: 0, count: 512)
            var newTopics: [OpaquePointer?] = []
            defer { for topic in newTopics { rd_kafka_NewTopic_destroy(topic) } }
            for topic in topics {
                guard let newTopic = rd_kafka_NewTopic_new(topic.name, topic.partitions, topic.replicationFactor, &errorBuffer, errorBuffer.count) else {
                    throw KafkaError(code: .admin, reason: "\(topic.name): \(RDKafkaClient.string(from: errorBuffer))")
                }
                newTopics.append(newTopic)
                for (key, value) in topic.configs.sorted(by: { $0.key < $1.key }) {
                    let error = rd_kafka_NewTopic_set_config(newTopic, key, value)
                    guard error == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError.rdKafka(error, code: .admin, context: "\(topic.name) \(key)") }
                }
            }
            let event = try Self.runAdminRequest(client: client, timeout: timeout) { options, queue in
                newTopics.withUnsafeMutableBufferPointer { buffer in
                    rd_kafka_CreateTopics(client.handle, buffer.baseAddress, buffer.count, options, queue)
                }
            }
            defer { rd_kafka_event_destroy(event) }
            guard let result = rd_kafka_event_CreateTopics_result(event) else {
                throw KafkaError(code: .admin, reason: "unexpected admin result event")
            }
            var count = 0
            let results = rd_kafka_CreateTopics_result_topics(result, &count)
            var outcome: [String: KafkaTopicCreation] = [:]
            for index in 0..<count {
                let topicResult = results![index]
                let name = String(cString: rd_kafka_topic_result_name(topicResult))
                switch rd_kafka_topic_result_error(topicResult) {
                case RD_KAFKA_RESP_ERR_NO_ERROR: outcome[name] = .created
                case RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS: outcome[name] = .alreadyExists
                case let error:
                    let detail = rd_kafka_topic_result_error_string(topicResult).map { String(cString: $0) }
                    throw KafkaError.rdKafka(error, code: .admin, context: "create \(name)\(detail.map { " (\($0))" } ?? "")")
                }
            }
            return outcome
        }
    }

    /// Describes topics: id and partition count. A topic that does not exist is absent from the result.
    public func describeTopics(_ names: [String], timeout: Duration = .seconds(30)) async throws -> [String: KafkaTopicDescription] {
        guard !names.isEmpty else { return [:] }
        let client = self.client
        return try await client.onBlockingQueue {
            var cNames = names.map { strdup($0) }
            defer { for name in cNames { free(name) } }
            let collection = cNames.withUnsafeMutableBufferPointer { buffer in
                buffer.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: buffer.count) {
                    rd_kafka_TopicCollection_of_topic_names($0, buffer.count)
                }
            }
            defer { rd_kafka_TopicCollection_destroy(collection) }
            let event = try Self.runAdminRequest(client: client, timeout: timeout) { options, queue in
                rd_kafka_DescribeTopics(client.handle, collection, options, queue)
            }
            defer { rd_kafka_event_destroy(event) }
            guard let result = rd_kafka_event_DescribeTopics_result(event) else {
                throw KafkaError(code: .admin, reason: "unexpected admin result event")
            }
            var count = 0
            let descriptions = rd_kafka_DescribeTopics_result_topics(result, &count)
            var outcome: [String: KafkaTopicDescription] = [:]
            for index in 0..<count {
                guard let description = descriptions?[index] else { continue }
                let name = String(cString: rd_kafka_TopicDescription_name(description))
                if let error = rd_kafka_TopicDescription_error(description), rd_kafka_error_code(error) != RD_KAFKA_RESP_ERR_NO_ERROR {
                    if rd_kafka_error_code(error) == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART { continue }
                    throw KafkaError.rdKafka(errorObject: error, code: .admin, context: "describe \(name)")
                }
                var partitionCount = 0
                _ = rd_kafka_TopicDescription_partitions(description, &partitionCount)
                let topicID = rd_kafka_TopicDescription_topic_id(description).flatMap { rd_kafka_Uuid_base64str($0) }
                outcome[name] = KafkaTopicDescription(
                    name: name, topicID: topicID.map { String(cString: $0) } ?? "", partitionCount: partitionCount)
            }
            return outcome
        }
    }

    /// Reads topic configs (`retention.ms`, …). Returns `nil` when the broker does not implement DescribeConfigs.
    public func describeConfigs(topic: String, timeout: Duration = .seconds(30)) async throws -> [String: String]? {
        let client = self.client
        return try await client.onBlockingQueue {
            let resource = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic)
            var resources: [OpaquePointer?] = [resource]
            defer { rd_kafka_ConfigResource_destroy(resource) }
            let event = try Self.runAdminRequest(client: client, timeout: timeout) { options, queue in
                resources.withUnsafeMutableBufferPointer { buffer in
                    rd_kafka_DescribeConfigs(client.handle, buffer.baseAddress, 1, options, queue)
                }
            }
            defer { rd_kafka_event_destroy(event) }
            guard let result = rd_kafka_event_DescribeConfigs_result(event) else { return nil }
            var count = 0
            guard let described = rd_kafka_DescribeConfigs_result_resources(result, &count), count > 0,
                  let first = described[0] else { return nil }
            let error = rd_kafka_ConfigResource_error(first)
            if error == RD_KAFKA_RESP_ERR_UNSUPPORTED_VERSION || error == RD_KAFKA_RESP_ERR_INVALID_REQUEST { return nil }
            guard error == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError.rdKafka(error, code: .admin, context: "describe configs \(topic)") }
            var configCount = 0
            let entries = rd_kafka_ConfigResource_configs(first, &configCount)
            var configs: [String: String] = [:]
            for index in 0..<configCount {
                guard let entry = entries?[index] else { continue }
                let name = String(cString: rd_kafka_ConfigEntry_name(entry))
                configs[name] = rd_kafka_ConfigEntry_value(entry).map { String(cString: $0) }
            }
            return configs
        }
    }

    /// Deletes topics (tests and benchmarks clean up after themselves; the local broker keeps everything in memory).
    public func deleteTopics(_ names: [String], timeout: Duration = .seconds(30)) async throws {
        guard !names.isEmpty else { return }
        let client = self.client
        try await client.onBlockingQueue {
            var deletes: [OpaquePointer?] = names.map { rd_kafka_DeleteTopic_new($0) }
            defer { for delete in deletes { rd_kafka_DeleteTopic_destroy(delete) } }
            let event = try Self.runAdminRequest(client: client, timeout: timeout) { options, queue in
                deletes.withUnsafeMutableBufferPointer { buffer in
                    rd_kafka_DeleteTopics(client.handle, buffer.baseAddress, buffer.count, options, queue)
                }
            }
            rd_kafka_event_destroy(event)
        }
    }

    /// Asks the cluster for its brokers and topics. Fails within `timeout` when no broker answers.
    public func metadata(timeout: Duration = .seconds(5)) async throws -> KafkaClusterMetadata {
        let client = self.client
        return try await client.onBlockingQueue {
            var metadata: UnsafePointer<rd_kafka_metadata>?
            let error = rd_kafka_metadata(client.handle, 1, nil, &metadata, Int32(timeout.milliseconds))
            guard error == RD_KAFKA_RESP_ERR_NO_ERROR, let metadata else {
                throw KafkaError.rdKafka(error, code: .admin, context: "metadata")
            }
            defer { rd_kafka_metadata_destroy(metadata) }
            let brokers = (0..<Int(metadata.pointee.broker_cnt)).map { index in
                let broker = metadata.pointee.brokers[index]
                return KafkaClusterMetadata.Broker(id: broker.id, host: String(cString: broker.host), port: broker.port)
            }
            let topics = (0..<Int(metadata.pointee.topic_cnt)).map { String(cString: metadata.pointee.topics[$0].topic) }
            return KafkaClusterMetadata(brokers: brokers, topicNames: topics.sorted(), originatingBrokerID: metadata.pointee.orig_broker_id)
        }
    }

    /// Runs one admin request on a private result queue and waits (on the blocking queue) for its result event.
    /// The caller destroys the returned event.
    private static func runAdminRequest(
        client: RDKafkaClient, timeout: Duration,
        _ request: (OpaquePointer?, OpaquePointer?) -> Void
    ) throws -> OpaquePointer {
        let queue = rd_kafka_queue_new(client.handle)
        defer { rd_kafka_queue_destroy(queue) }
        let options = rd_kafka_AdminOptions_new(client.handle, RD_KAFKA_ADMIN_OP_ANY)
        defer { rd_kafka_AdminOptions_destroy(options) }
        var errorBuffer = [CChar](repeating: 0, count: 512)
        _ = rd_kafka_AdminOptions_set_request_timeout(options, Int32(timeout.milliseconds), &errorBuffer, errorBuffer.count)
        request(options, queue)
        guard let event = rd_kafka_queue_poll(queue, Int32(timeout.milliseconds) + 1000) else {
            throw KafkaError(code: .timeout, reason: "no admin result within \(timeout)")
        }
        let error = rd_kafka_event_error(event)
        if error != RD_KAFKA_RESP_ERR_NO_ERROR {
            let text = rd_kafka_event_error_string(event).map { String(cString: $0) } ?? ""
            rd_kafka_event_destroy(event)
            throw KafkaError(code: .admin, rdKafkaCode: error.rawValue, reason: text, isRetriable: RDKafkaErrorCodes.isRetriable(error))
        }
        return event
    }
}
