import ScoreboardCore

/// Bans on the score-events topic (``UserBanned``), keyed by the user exactly as the user's events are, so a ban lands
/// on their partition, behind the events already there, and reaches the worker that owns them.
extension KafkaScoreEvents {
    /// The message a ban is published as: its JSON (sorted keys), keyed by ``UserBanned/partitionKey``.
    public static func message(for ban: UserBanned, topic: String) throws -> KafkaProducerMessage {
        KafkaProducerMessage(
            topic: topic, key: Array(ban.partitionKey.utf8), value: Array(try encoder.encode(ban)), timestampMilliseconds: ban.bannedAt)
    }

    /// Returns once the broker acknowledged the ban.
    /// - Throws: A ``KafkaError`` when it was not delivered.
    public func publish(_ ban: UserBanned) async throws {
        _ = try await producer.send(try Self.message(for: ban, topic: topic))
    }
}
