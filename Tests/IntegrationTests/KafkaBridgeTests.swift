import CRdKafka
import Foundation
@testable import ScoreboardKafka
import Synchronization
import Testing

/// The C bridges under pressure: wake-ups that race with delivery reports, shutdown with senders waiting, and polls
/// that must give way to seeks and cancellation.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct KafkaBridgeTests {
    /// Bad input: a queue of one message, so that nearly every send waits for room and most wake-ups race with the
    /// report that frees it. A wake-up lost between a QUEUE_FULL and the wait used to hang the sender for good.
    @Test func sendersWaitingForRoomInAOneMessageQueueAllFinish() async throws {
        try await TestEnvironment.withTopic(partitions: 2) { topic in
            var configuration = KafkaProducerConfiguration(client: TestEnvironment.settings.kafkaClient)
            configuration.queueMaxMessages = 1
            configuration.linger = .zero
            let producer = try KafkaProducer(configuration: configuration, logger: TestEnvironment.logger)
            let delivered = try await within(.seconds(90)) {
                try await withThrowingTaskGroup(of: Int.self) { group in
                    for sender in 0..<4 {
                        group.addTask {
                            let messages = (0..<300).map { KafkaProducerMessage(topic: topic, key: Array("s\(sender)-\($0)".utf8), value: [1]) }
                            return try await producer.send(batch: messages).filter { (try? $0.get()) != nil }.count
                        }
                    }
                    return try await group.reduce(0, +)
                }
            }
            #expect(delivered == 1_200)
            await producer.shutdown()
        }
    }

    /// Bad input: a broker that does not exist and a one-message queue, so the second message of a batch waits for
    /// room that never comes. Shutdown must fail that sender instead of leaving it waiting.
    @Test func shutdownReleasesSendersWaitingForRoom() async throws {
        var configuration = KafkaProducerConfiguration(client: KafkaClientConfiguration(bootstrapServers: ["127.0.0.1:\(try freeLoopbackPort())"]))
        configuration.queueMaxMessages = 1
        configuration.deliveryTimeout = .seconds(120)
        configuration.shutdownFlushTimeout = .milliseconds(200)
        let producer = try KafkaProducer(configuration: configuration, logger: TestEnvironment.logger)
        let started = AsyncStream<Void>.makeStream()
        let sender = Task {
            started.continuation.finish()
            return try await producer.send(batch: (0..<3).map { KafkaProducerMessage(topic: "nowhere", key: [UInt8($0)], value: [1]) })
        }
        for await _ in started.stream {}
        // Let the first message take the only place, so the second waits for room. Polled with a sleep, not
        // `Task.yield()`: a yielding loop keeps a thread of the two-thread pool busy and, in a full parallel run,
        // starved the rest of the process.
        try await within(.seconds(20)) { while producer.outstandingMessageCount == 0 { try await Task.sleep(for: .milliseconds(2)) } }
        await producer.shutdown()
        let results = try await within(.seconds(20)) { try await sender.value }
        #expect(results.count == 3)
        #expect(results.allSatisfy { (try? $0.get()) == nil })
    }

    /// A seek issued while a poll waits for messages that do not come used to queue behind that poll forever.
    @Test func aSeekTakesEffectWhileABatchIsAwaited() async throws {
        try await TestEnvironment.withTopic(partitions: 1) { topic in
            let producer = try TestEnvironment.producer()
            _ = try await producer.send(batch: (0..<10).map { KafkaProducerMessage(topic: topic, key: "k", value: "m\($0)") })
            await producer.shutdown()
            let assigned = AsyncStream<Void>.makeStream()
            let consumer = try KafkaConsumer(
                configuration: TestEnvironment.consumerConfiguration(group: TestEnvironment.uniqueName("seek")), topics: [topic],
                rebalanceHandler: KafkaRebalanceHandler(onAssign: { partitions in
                    assigned.continuation.yield()
                    // Start at the log end: nothing to read until the seek moves back.
                    return Dictionary(uniqueKeysWithValues: partitions.map { ($0, KafkaStartOffset.offset(10)) })
                }), logger: TestEnvironment.logger)
            let firstOffset = Task { () -> Int64? in
                for try await batch in consumer.batches { return batch.messages.first?.offset }
                return nil
            }
            try await within(.seconds(30)) { for await _ in assigned.stream { break } }
            try await within(.seconds(10)) { try await consumer.seek([KafkaTopicPartition(topic: topic, partition: 0): 3]) }
            #expect(try await within(.seconds(10)) { try await firstOffset.value } == 3)
            await consumer.close()
        }
    }

    /// With a poll timeout of a minute, cancellation used to wait for that minute; it now wakes the poll.
    @Test func cancellingAnAwaitedBatchEndsItAtOnce() async throws {
        try await TestEnvironment.withTopic(partitions: 1) { topic in
            var configuration = TestEnvironment.consumerConfiguration(group: TestEnvironment.uniqueName("cancel"))
            configuration.pollTimeout = .seconds(60)
            let consumer = try KafkaConsumer(configuration: configuration, topics: [topic], logger: TestEnvironment.logger)
            let waiting = Task { () -> Int in
                var batches = 0
                for try await _ in consumer.batches { batches += 1 }
                return batches
            }
            // Give the poll time to start waiting (nothing observable marks that moment).
            try await Task.sleep(for: .milliseconds(500))
            waiting.cancel()
            #expect(try await within(.seconds(10)) { try await waiting.value } == 0)
            await consumer.close()
        }
    }

    @Test func repeatedBrokerWarningsAreThrottledPerFacility() {
        let throttle = LogThrottle(interval: .seconds(60))
        let start = ContinuousClock.now
        #expect(throttle.admit("FAIL", now: start) == .log(suppressed: 0))
        for second in 1...20 { #expect(throttle.admit("FAIL", now: start + .seconds(second)) == .suppress) }
        #expect(throttle.admit("REQTMOUT", now: start + .seconds(1)) == .log(suppressed: 0))
        #expect(throttle.admit("FAIL", now: start + .seconds(61)) == .log(suppressed: 20))
    }

    /// Bad input: the delivery results of a producer whose id a restarted memory broker handed to another producer
    /// (seen in the broker chaos scenario: one worker's producer got `PRODUCER_FENCED` on every batch, which
    /// librdkafka does not raise as fatal, and that worker's partitions were never consumed again). Such an instance
    /// is replaced at once; timeouts only after a whole delivery timeout without a delivery; other errors never.
    @Test func aProducerWhoseIdTheBrokerNoLongerTakesIsReplaced() {
        let timeout: Duration = .seconds(30)
        func failed(_ code: rd_kafka_resp_err_t) -> Result<KafkaDeliveryReport, KafkaError> { .failure(.rdKafka(code, code: .messageDelivery)) }
        let delivered: Result<KafkaDeliveryReport, KafkaError> = .success(KafkaDeliveryReport(topic: "t", partition: 0, offset: 1))
        func reason(_ results: [Result<KafkaDeliveryReport, KafkaError>], quietFor: Duration = .zero) -> String? {
            KafkaProducer.replacementReason(after: results, quietFor: quietFor, deliveryTimeout: timeout)
        }
        #expect(reason([failed(RD_KAFKA_RESP_ERR_PRODUCER_FENCED)])?.contains("PRODUCER_FENCED") == true)
        #expect(reason([delivered, failed(RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER)]) != nil, "fenced from now on, whatever got through")
        #expect(reason([failed(RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH)]) != nil)
        #expect(reason([failed(RD_KAFKA_RESP_ERR__MSG_TIMED_OUT)], quietFor: .seconds(10)) == nil)
        #expect(reason([failed(RD_KAFKA_RESP_ERR__MSG_TIMED_OUT)], quietFor: .seconds(31)) == "no delivery for a whole delivery timeout")
        #expect(reason([delivered, failed(RD_KAFKA_RESP_ERR__MSG_TIMED_OUT)], quietFor: .seconds(31)) == nil)
        #expect(reason([failed(RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE)], quietFor: .seconds(31)) == nil)
        #expect(reason([delivered]) == nil)
    }
}

extension KafkaBridgeTests {
    /// A memory-only broker that restarts forgets the idempotent producer: it answers UNKNOWN_PRODUCER_ID, and
    /// librdkafka either raises a fatal error or bumps the epoch of a producer id the broker never knew, over and
    /// over. Before, every later send failed until the process restarted (a gateway answered 503 for good). The
    /// producer now replaces its instance and sends again.
    @Test func aProducerRecoversFromTheFatalErrorOfABrokerThatForgotIt() async throws {
        let broker = try await PrivateBroker()
        let client = KafkaClientConfiguration(bootstrapServers: [broker.address])
        let admin = try KafkaAdminClient(configuration: client, logger: TestEnvironment.logger)
        let topic = TestEnvironment.uniqueName("fatal")
        _ = try await admin.createTopics([KafkaNewTopic(name: topic, partitions: 1)])
        var configuration = KafkaProducerConfiguration(client: client)
        configuration.deliveryTimeout = .seconds(5)
        let producer = try KafkaProducer(configuration: configuration, logger: TestEnvironment.logger)
        _ = try await producer.send(KafkaProducerMessage(topic: topic, key: "k", value: "before"))
        let first = try #require(producer.instance)

        broker.kill()
        try await broker.start()
        // A fresh admin client, as `scoreboard topics apply` would be.
        let freshAdmin = try KafkaAdminClient(configuration: client, logger: TestEnvironment.logger)
        _ = try await within(.seconds(30)) { try await freshAdmin.createTopics([KafkaNewTopic(name: topic, partitions: 1)]) }
        // Sends may fail while the new broker and the producer sort themselves out; one must succeed within a minute.
        let delivered = try await within(.seconds(60)) { () -> KafkaDeliveryReport in
            while true {
                if let report = try? await producer.send(KafkaProducerMessage(topic: topic, key: "k", value: "after")) { return report }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        #expect(delivered.offset >= 0)
        #expect(producer.instance !== first, "the fatal instance was replaced")
        await producer.shutdown()
        broker.kill()
    }
}
