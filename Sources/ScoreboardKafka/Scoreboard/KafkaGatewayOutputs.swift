import Foundation
import ScoreboardCore

/// The ingest gateway's outputs on Kafka: accepted score events keyed by user id (one user's events stay on one
/// partition, in order) and refused requests keyed by user id or client address. The JSON of both is encoded here and
/// nowhere else.
public struct KafkaScoreEvents: Sendable {
    let producer: KafkaProducer
    let topic: String

    public init(producer: KafkaProducer, topics: TopicNames) {
        self.producer = producer
        self.topic = topics.scoreEvents
    }

    /// The message an event is published as: its JSON (sorted keys, so equal events are equal bytes), keyed by
    /// ``ScoreEvent/partitionKey``, stamped with the event's time.
    public static func message(for event: ScoreEvent, topic: String) throws -> KafkaProducerMessage {
        KafkaProducerMessage(
            topic: topic, key: Array(event.partitionKey.utf8), value: Array(try encoder.encode(event)),
            timestampMilliseconds: event.occurredAt.millisecondsSinceEpoch)
    }

    /// Sends `events` and returns once every delivery report is in: where each landed, or why not (in order).
    public func send(_ events: [ScoreEvent]) async -> [Result<KafkaDeliveryReport, any Error>] {
        do {
            let messages = try events.map { try Self.message(for: $0, topic: topic) }
            return try await producer.send(batch: messages).map { $0.mapError { $0 as any Error } }
        } catch {
            return events.map { _ in .failure(error) }
        }
    }

    /// Messages handed to librdkafka and not yet acknowledged.
    public var unacknowledgedCount: Int { producer.outstandingMessageCount }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return encoder
    }()
}

/// Refused ingest requests on the rejections topic, for the fraud rules.
public struct KafkaRejections: Sendable {
    let producer: KafkaProducer
    let topic: String

    public init(producer: KafkaProducer, topics: TopicNames) {
        self.producer = producer
        self.topic = topics.rejections
    }

    /// Returns once the broker acknowledged `rejection`.
    public func publish(_ rejection: Rejection) async throws {
        _ = try await producer.send(KafkaProducerMessage(
            topic: topic, key: Array(rejection.partitionKey.utf8), value: Array(try KafkaScoreEvents.encoder.encode(rejection)),
            timestampMilliseconds: rejection.occurredAt.millisecondsSinceEpoch))
    }
}
