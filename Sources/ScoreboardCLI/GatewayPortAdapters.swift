import ScoreboardCore
import ScoreboardGateway
import ScoreboardHTTP
import ScoreboardKafka
import ScoreboardRedis

// The adapters implement the gateway's ports. The conformances live here, where the roles are composed: the gateway
// library knows only its ports, and the adapters know nothing of the gateway. (Redis's TokenRevocations conformance
// is in ScoreboardHTTP, beside the port, because every HTTP role authenticates.)
extension RedisIngestState: IngestState {}
extension KafkaRejections: RejectionPublishing {}
extension KafkaScoreEvents: ScoreEventPublishing {
    public func publish(_ events: [ScoreEvent]) async -> [Result<EventPosition, any Error>] {
        await send(events).map { report in report.map { EventPosition(partition: $0.partition, offset: $0.offset) } }
    }
}

extension GatewayPorts {
    /// The production ports: Redis's ingest state and revocation list, Kafka's score-events and rejections topics.
    public static func live(redis: RedisConnectionPool, producer: KafkaProducer, topics: TopicNames) -> GatewayPorts {
        GatewayPorts(
            scoreEvents: KafkaScoreEvents(producer: producer, topics: topics), rejections: KafkaRejections(producer: producer, topics: topics),
            state: RedisIngestState(redis: redis), revocations: RedisTokenRevocations(redis: redis))
    }
}
