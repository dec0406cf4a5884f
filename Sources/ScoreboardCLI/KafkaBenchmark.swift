import CKafkaBaseline
import Foundation
import Logging
import ScoreboardKafka

/// Producer and consumer throughput of ``ScoreboardKafka`` beside bare librdkafka loops, in the same run, on the
/// same broker, with the same settings. Each repetition uses fresh topics, deleted afterwards (the local broker
/// keeps everything in memory).
public struct KafkaBenchmark: Sendable {
    public struct Configuration: Sendable {
        public var messages = 200_000
        public var valueSize = 200
        public var partitions: Int32 = 8
        public var repetitions = 3
        /// Messages per `send(batch:)` call, and how many such calls may be waiting at once.
        public var sendBatchSize = 5_000
        public var sendConcurrency = 8

        public init() {}
    }

    public struct Measurement: Sendable {
        public var name: String
        public var baselineRates: [Double]
        public var wrapperRates: [Double]

        public var baselineMedian: Double { Self.median(baselineRates) }
        public var wrapperMedian: Double { Self.median(wrapperRates) }
        /// Wrapper throughput over baseline throughput: 1.0 means no overhead.
        public var ratio: Double { wrapperMedian / baselineMedian }
        /// Median of the per-repetition ratios (each pair ran back to back, so noise cancels better).
        public var pairedRatio: Double { Self.median(zip(wrapperRates, baselineRates).map { $0 / $1 }) }

        public static func median(_ values: [Double]) -> Double {
            let sorted = values.sorted()
            guard !sorted.isEmpty else { return 0 }
            return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        }
    }

    let connection: ConnectionSettings
    let configuration: Configuration
    let logger: Logger
    let progress: @Sendable (String) -> Void

    public init(connection: ConnectionSettings, configuration: Configuration, logger: Logger, progress: @escaping @Sendable (String) -> Void) {
        self.connection = connection
        self.configuration = configuration
        self.logger = logger
        self.progress = progress
    }

    public func run() async throws -> [Measurement] {
        let admin = try KafkaAdminClient(configuration: connection.kafkaClient, logger: logger)
        var produce = Measurement(name: "produce", baselineRates: [], wrapperRates: [])
        var consume = Measurement(name: "consume", baselineRates: [], wrapperRates: [])
        let brokers = connection.kafkaBrokers.joined(separator: ",")
        for repetition in 1...configuration.repetitions {
            let runID = UUID().uuidString.prefix(8).lowercased()
            let baselineTopic = "bench.baseline.\(runID)"
            let wrapperTopic = "bench.wrapper.\(runID)"
            _ = try await admin.createTopics([
                KafkaNewTopic(name: baselineTopic, partitions: configuration.partitions),
                KafkaNewTopic(name: wrapperTopic, partitions: configuration.partitions),
            ])
            do {
                try await runRepetition(repetition, baselineTopic: baselineTopic, wrapperTopic: wrapperTopic, runID: String(runID),
                                        brokers: brokers, produce: &produce, consume: &consume)
            } catch {
                try? await admin.deleteTopics([baselineTopic, wrapperTopic])
                throw error
            }
            try? await admin.deleteTopics([baselineTopic, wrapperTopic])
        }
        return [produce, consume]
    }

    private func runRepetition(
        _ repetition: Int, baselineTopic: String, wrapperTopic: String, runID: String, brokers: String,
        produce: inout Measurement, consume: inout Measurement
    ) async throws {
        // Alternate which side goes first, so warm-up effects do not always favour one.
        let baselineFirst = repetition % 2 == 1
        var baselineRate = 0.0, wrapperRate = 0.0
        for side in baselineFirst ? ["baseline", "wrapper"] : ["wrapper", "baseline"] {
            if side == "baseline" {
                baselineRate = try await baselineProduce(brokers: brokers, topic: baselineTopic)
            } else {
                wrapperRate = try await wrapperProduce(topic: wrapperTopic)
            }
        }
        produce.baselineRates.append(baselineRate)
        produce.wrapperRates.append(wrapperRate)
        progress("[\(repetition)/\(configuration.repetitions)] produce: librdkafka \(Int(baselineRate)) msg/s, ScoreboardKafka \(Int(wrapperRate)) msg/s")

        for side in baselineFirst ? ["baseline", "wrapper"] : ["wrapper", "baseline"] {
            if side == "baseline" {
                baselineRate = try await baselineConsume(brokers: brokers, topic: baselineTopic, group: "bench-baseline-\(runID)")
            } else {
                wrapperRate = try await wrapperConsume(topic: wrapperTopic, group: "bench-wrapper-\(runID)")
            }
        }
        consume.baselineRates.append(baselineRate)
        consume.wrapperRates.append(wrapperRate)
        progress("[\(repetition)/\(configuration.repetitions)] consume: librdkafka \(Int(baselineRate)) msg/s, ScoreboardKafka \(Int(wrapperRate)) msg/s")
    }

    // MARK: - Baseline (C)

    private func baselineProduce(brokers: String, topic: String) async throws -> Double {
        let count = Int64(configuration.messages), size = Int32(configuration.valueSize)
        let result = try await onOwnThread { scoreboard_baseline_produce(brokers, topic, count, size, 20_000) }
        return try rate(result)
    }

    private func baselineConsume(brokers: String, topic: String, group: String) async throws -> Double {
        let count = Int64(configuration.messages)
        let result = try await onOwnThread { scoreboard_baseline_consume(brokers, topic, group, count, 120_000) }
        return try rate(result)
    }

    private func rate(_ result: scoreboard_baseline_result) throws -> Double {
        if result.failed != 0 {
            let message = withUnsafeBytes(of: result.error) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            throw KafkaBenchmarkError(message: "baseline: \(message)")
        }
        return Double(result.messages) / result.seconds
    }

    /// The C loops block: run them on a thread of their own, not the cooperative pool.
    private func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async throws -> T {
        await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: body()) }.start()
        }
    }

    // MARK: - Wrapper (Swift)

    private func wrapperProduce(topic: String) async throws -> Double {
        let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(client: connection.kafkaClient), logger: logger)
        let value = [UInt8](repeating: UInt8(ascii: "v"), count: configuration.valueSize)
        let total = configuration.messages, batchSize = configuration.sendBatchSize
        // Each task formats its own batch inside the timed section (the C loop formats keys as it goes, too).
        let start = ContinuousClock.now
        let failures = try await withThrowingTaskGroup(of: Int.self) { group in
            var next = 0, inFlight = 0, failures = 0
            while next < total || inFlight > 0 {
                while next < total && inFlight < configuration.sendConcurrency {
                    let range = next..<min(next + batchSize, total)
                    next = range.upperBound
                    inFlight += 1
                    group.addTask {
                        let batch = range.map {
                            KafkaProducerMessage(topic: topic, key: Array("user-\($0 % 20_000)".utf8), value: value)
                        }
                        return try await producer.send(batch: batch).filter { if case .failure = $0 { true } else { false } }.count
                    }
                }
                failures += try await group.next() ?? 0
                inFlight -= 1
            }
            return failures
        }
        let elapsed = ContinuousClock.now - start
        await producer.shutdown()
        if failures > 0 { throw KafkaBenchmarkError(message: "wrapper: \(failures) deliveries failed") }
        return Double(total) / elapsed.seconds
    }

    private func wrapperConsume(topic: String, group: String) async throws -> Double {
        var configuration = KafkaConsumerConfiguration(client: connection.kafkaClient, groupID: group)
        configuration.sessionTimeout = .seconds(6)
        configuration.heartbeatInterval = .milliseconds(500)
        let consumer = try KafkaConsumer(configuration: configuration, topics: [topic], logger: logger)
        var received = 0
        var start: ContinuousClock.Instant?
        let deadline = ContinuousClock.now + .seconds(120)
        for try await batch in consumer.batches {
            if start == nil { start = .now }
            received += batch.messages.count
            if received >= self.configuration.messages || ContinuousClock.now > deadline { break }
        }
        let elapsed = ContinuousClock.now - (start ?? .now)
        await consumer.close()
        guard received >= self.configuration.messages else {
            throw KafkaBenchmarkError(message: "wrapper: read \(received) of \(self.configuration.messages) messages")
        }
        return Double(received) / elapsed.seconds
    }
}

struct KafkaBenchmarkError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

extension Duration {
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
