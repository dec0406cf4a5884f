import Foundation
import ScoreboardCore

/// The worker's outputs on Kafka: leaderboard updates keyed by board stream (so each board's updates keep one
/// partition's order, which push clients resume by) and dead letters keyed like their source message. The JSON of
/// both is encoded here and nowhere else.
public struct KafkaWorkerOutputs: Sendable {
    let producer: KafkaProducer
    let topics: TopicNames

    public init(producer: KafkaProducer, topics: TopicNames) {
        self.producer = producer
        self.topics = topics
    }

    public func publishUpdates(_ updates: [LeaderboardUpdate]) async throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let messages = try updates.map { update in
            KafkaProducerMessage(topic: topics.leaderboardUpdates, key: Array(update.streamID.utf8), value: Array(try encoder.encode(update)))
        }
        try await sendAll(messages)
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
