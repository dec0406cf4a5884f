import Foundation
import ScoreboardCore

/// The worker's outputs on Kafka: leaderboard updates (one per member, version 1, or one per board per batch, version
/// 2) keyed by board stream (so each board's updates keep one partition's order, which push clients resume by) and dead letters keyed like their source message. The JSON of
/// both is encoded here and nowhere else.
public struct KafkaWorkerOutputs: Sendable {
    let producer: KafkaProducer
    let topics: TopicNames

    public init(producer: KafkaProducer, topics: TopicNames) {
        self.producer = producer
        self.topics = topics
    }

    public func publishUpdates(_ updates: [LeaderboardUpdate]) async throws {
        try await sendAll(try updates.map { try Self.message(for: $0, topic: topics.leaderboardUpdates) })
    }

    /// One message per board period (schema version 2), keyed by the board's stream like version 1, so each board's
    /// messages keep one partition's order.
    public func publishBoardChanges(_ changes: [BoardChanges]) async throws {
        try await sendAll(try changes.map { try Self.message(for: $0, topic: topics.leaderboardUpdates) })
    }

    /// A version 1 update as published: its JSON (`topics/leaderboard-updates.yaml`), keyed by the board's stream.
    public static func message(for update: LeaderboardUpdate, topic: String) throws -> KafkaProducerMessage {
        KafkaProducerMessage(topic: topic, key: Array(update.streamID.utf8), value: Array(try encoder.encode(update)))
    }

    /// A version 2 board change as published: its JSON, keyed by the board's stream.
    public static func message(for changes: BoardChanges, topic: String) throws -> KafkaProducerMessage {
        KafkaProducerMessage(topic: topic, key: Array(changes.streamID.utf8), value: Array(try encoder.encode(changes)))
    }

    private static var encoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return encoder
    }

    public func publishDeadLetters(_ letters: [DeadLetter]) async throws {
        let encoder = JSONEncoder()
        let messages = try letters.map { letter in
            KafkaProducerMessage(topic: topics.deadLetter, key: letter.key, value: Array(try encoder.encode(letter)))
        }
        try await sendAll(messages)
    }

    /// Sends every message and throws the first failure once all reports are in.
    private func sendAll(_ messages: [KafkaProducerMessage]) async throws {
        for result in try await producer.send(batch: messages) { _ = try result.get() }
    }
}

extension KafkaAdminClient {
    /// The topic's id (its incarnation), or `nil` when the topic does not exist.
    public func topicID(of topic: String) async throws -> String? {
        try await describeTopics([topic])[topic]?.topicID
    }
}
