import Foundation
import Logging
import Metrics
import ScoreboardCore
import ScoreboardKafka
import ServiceLifecycle

/// Publishes refused requests to the rejections topic without holding up the refusal: `record` only buffers (the
/// newest 10,000 when the broker lags), and this service sends in batches.
public final class RejectionLog: Service, Sendable {
    private let producer: KafkaProducer
    private let topic: String
    private let stream: AsyncStream<Rejection>
    private let continuation: AsyncStream<Rejection>.Continuation
    private let logger: Logger

    public init(producer: KafkaProducer, topic: String, logger: Logger) {
        self.producer = producer
        self.topic = topic
        self.logger = logger
        (stream, continuation) = AsyncStream.makeStream(of: Rejection.self, bufferingPolicy: .bufferingNewest(10_000))
    }

    public func record(_ rejection: Rejection) {
        Counter(label: "gateway_rejections_total", dimensions: [("reason", rejection.reason)]).increment()
        continuation.yield(rejection)
    }

    public func run() async throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        for await rejection in stream.cancelOnGracefulShutdown() {
            guard let value = try? encoder.encode(rejection) else { continue }
            let message = KafkaProducerMessage(
                topic: topic, key: Array(rejection.partitionKey.utf8), value: Array(value),
                timestampMilliseconds: rejection.occurredAt.millisecondsSinceEpoch)
            do {
                _ = try await producer.send(message)
            } catch {
                logger.warning("rejection not published", metadata: ["reason": "\(rejection.reason)", "error": "\(error)"])
            }
        }
    }
}
