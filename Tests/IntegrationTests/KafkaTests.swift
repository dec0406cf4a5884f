import Foundation
import ScoreboardCLI
import ScoreboardKafka
import Testing

@Suite(.serialized, .timeLimit(.minutes(3)))
struct KafkaTests {
    @Test func tenThousandKeyedMessagesRoundTripByteForByte() async throws {
        try await TestEnvironment.withTopic(partitions: 4) { topic in
            let producer = try TestEnvironment.producer()
            // Values of varied length and every byte value, so that nothing relies on text or NUL terminators.
            let sent: [String: [UInt8]] = Dictionary(uniqueKeysWithValues: (0..<10_000).map { index in
                ("key-\(index)", (0..<(index % 300)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ index) })
            })
            let reports = try await producer.send(batch: sent.map { KafkaProducerMessage(topic: topic, key: Array($0.key.utf8), value: $0.value) })
            let offsets = try reports.map { try $0.get() }
            #expect(offsets.count == 10_000)
            #expect(Set(offsets.map(\.partition)) == [0, 1, 2, 3])
            await producer.shutdown()

            let consumer = try KafkaConsumer(
                configuration: TestEnvironment.consumerConfiguration(group: TestEnvironment.uniqueName("roundtrip")),
                topics: [topic], logger: TestEnvironment.logger)
            let received = try await within(.seconds(60)) {
                var received: [String: [UInt8]] = [:]
                var partitionOfKey: [String: Int32] = [:]
                for try await batch in consumer.batches {
                    for message in batch.messages {
                        let key = String(decoding: message.key ?? [], as: UTF8.self)
                        #expect(received[key] == nil, "\(key) delivered twice")
                        received[key] = Array(message.value)
                        // A key always lands on the same partition (the partitioner hashes it).
                        #expect(partitionOfKey.updateValue(message.partition, forKey: key).map { $0 == message.partition } ?? true)
                    }
                    if received.count >= 10_000 { break }
                }
                return received
            }
            await consumer.close()
            #expect(received.count == sent.count)
            #expect(received == sent)
        }
    }

    /// A consumer configured as the roles configure theirs (`ConnectionSettings.consumer(groupID:)`, no override) reads a
    /// deep partition: 40,000 records, each its own record batch, as a gateway under light load writes them. The local
    /// broker answers a fetch empty when its own work, which grows with the partition, outlasts the fetch's wait:
    /// with the 10 ms wait the roles had, this consumer read nothing (and the full worker-kill run stalled for good).
    /// The deadline only catches that stall; it is not a speed target.
    @Test func aDeepPartitionIsReadAndAStalledConsumerShowsItsLag() async throws {
        try await TestEnvironment.withTopic(partitions: 1) { topic in
            var producerConfiguration = KafkaProducerConfiguration(client: TestEnvironment.settings.kafkaClient)
            producerConfiguration.linger = .zero
            producerConfiguration.client.additionalProperties["batch.num.messages"] = "1"
            // One record per produce request takes a while on a loaded machine.
            producerConfiguration.deliveryTimeout = .seconds(150)
            let producer = try KafkaProducer(configuration: producerConfiguration, logger: TestEnvironment.logger)
            let count = 40_000
            let reports = try await producer.send(batch: (0..<count).map { index in
                KafkaProducerMessage(topic: topic, key: Array("k\(index % 100)".utf8), value: Array(repeating: UInt8(index % 251), count: 200))
            })
            #expect(try reports.map { try $0.get() }.count == count)
            await producer.shutdown()

            // 1. With the old 10 ms wait the consumer reads nothing, and still reports how far behind it is: librdkafka
            //    has no position for a partition nothing was consumed from, so the lag counts from the offset the
            //    partition was told to start at (the worker's stall check reads this lag; it was empty here).
            var stalling = TestEnvironment.consumerConfiguration(group: TestEnvironment.uniqueName("stalling"))
            stalling.fetchWait = .milliseconds(10)
            let stalled = try KafkaConsumer(
                configuration: stalling, topics: [topic],
                rebalanceHandler: KafkaRebalanceHandler(onAssign: { partitions in Dictionary(uniqueKeysWithValues: partitions.map { ($0, .offset(0)) }) }),
                logger: TestEnvironment.logger)
            let polling = Task { for try await _ in stalled.batches {} }
            let lagReported: Result<Int64, any Error>
            do {
                lagReported = .success(try await within(.seconds(30)) {
                    while true {
                        if let lag = stalled.lag()[KafkaTopicPartition(topic: topic, partition: 0)], lag > 0 { return lag }
                        try await Task.sleep(for: .milliseconds(100))
                    }
                })
            } catch {
                lagReported = .failure(error)
            }
            polling.cancel()
            await stalled.close()
            _ = await polling.result
            let reported = try lagReported.get()
            // The local broker under-reports its high watermark by at most one batch's records (one each here).
            #expect(reported >= Int64(count) - 1)

            // 2. As the roles configure it, the consumer reads them all.
            let settings = try ConnectionSettings(environment: [
                "SCOREBOARD_KAFKA_BROKERS": TestEnvironment.settings.kafkaBrokers.joined(separator: ","),
                "SCOREBOARD_KAFKA_SESSION_TIMEOUT_MS": "3000",
            ])
            let consumer = try KafkaConsumer(
                configuration: settings.consumer(groupID: TestEnvironment.uniqueName("deep")), topics: [topic], logger: TestEnvironment.logger)
            let read = try await within(.seconds(120)) {
                var read = 0
                for try await batch in consumer.batches {
                    read += batch.messages.count
                    if read >= count { break }
                }
                return read
            }
            await consumer.close()
            #expect(read == count)
        }
    }

    /// A processor that sizes its batches (the worker, by its recent speed) gets batches no larger than it asked
    /// for, and every message still arrives; a limit outside 1...maxBatchSize is clamped.
    @Test func batchesHonourTheLimitSetWhileConsuming() async throws {
        try await TestEnvironment.withTopic(partitions: 2) { topic in
            let producer = try TestEnvironment.producer()
            let reports = try await producer.send(batch: (0..<2_000).map { KafkaProducerMessage(topic: topic, key: Array("k\($0)".utf8), value: [UInt8($0 % 256)]) })
            for report in reports { _ = try report.get() }
            await producer.shutdown()

            var configuration = TestEnvironment.consumerConfiguration(group: TestEnvironment.uniqueName("limit"))
            configuration.maxBatchSize = 500
            let consumer = try KafkaConsumer(configuration: configuration, topics: [topic], logger: TestEnvironment.logger)
            consumer.limitBatches(to: 0)
            #expect(consumer.batchLimit == 1)
            consumer.limitBatches(to: 10_000)
            #expect(consumer.batchLimit == 500)
            consumer.limitBatches(to: 7)
            let sizes = try await within(.seconds(60)) {
                var sizes: [Int] = []
                for try await batch in consumer.batches {
                    sizes.append(batch.messages.count)
                    // Halfway, a larger limit: later batches may grow up to it.
                    if sizes.reduce(0, +) >= 1_000 { consumer.limitBatches(to: 300) }
                    if sizes.reduce(0, +) >= 2_000 { break }
                }
                return sizes
            }
            await consumer.close()
            #expect(sizes.reduce(0, +) == 2_000)
            let cut = sizes.indices.first { sizes[..<($0 + 1)].reduce(0, +) >= 1_000 }!
            #expect(sizes[...cut].allSatisfy { $0 <= 7 }, "\(sizes[...cut])")
            #expect(sizes[(cut + 1)...].allSatisfy { $0 <= 300 } && sizes[(cut + 1)...].contains { $0 > 7 }, "\(sizes[(cut + 1)...])")
        }
    }

    @Test func twoConsumersInOneGroupSplitPartitionsAndSeeNoMessageTwice() async throws {
        try await TestEnvironment.withTopic(partitions: 4) { topic in
            let group = TestEnvironment.uniqueName("split")
            let (assignments, assignmentsContinuation) = AsyncStream<(Int, [KafkaTopicPartition])>.makeStream()
            func makeConsumer(_ id: Int) throws -> KafkaConsumer {
                try KafkaConsumer(
                    configuration: TestEnvironment.consumerConfiguration(group: group), topics: [topic],
                    rebalanceHandler: KafkaRebalanceHandler(onAssign: { partitions in
                        assignmentsContinuation.yield((id, partitions))
                        return Dictionary(uniqueKeysWithValues: partitions.map { ($0, .committed) })
                    }, onRevoke: { _ in assignmentsContinuation.yield((id, [])) }),
                    logger: TestEnvironment.logger)
            }
            let consumers = [try makeConsumer(0), try makeConsumer(1)]
            let (readings, readingsContinuation) = AsyncStream<(Int, [String])>.makeStream()
            var seen: [Int: [String]] = [0: [], 1: []]
            let total = 2_000

            try await withThrowingTaskGroup(of: Void.self) { group in
                for (id, consumer) in consumers.enumerated() {
                    group.addTask {
                        for try await batch in consumer.batches {
                            readingsContinuation.yield((id, batch.messages.map { "\($0.partition):\($0.offset)" }))
                        }
                    }
                }
                // Produce only once the group has settled with both members owning partitions, so that no
                // message is read before a rebalance hands its partition to the other member.
                var current: [Int: [KafkaTopicPartition]] = [:]
                for await (id, partitions) in assignments {
                    current[id] = partitions
                    let owned = (current[0] ?? []) + (current[1] ?? [])
                    if !(current[0] ?? []).isEmpty, !(current[1] ?? []).isEmpty, owned.count == 4, Set(owned).count == 4 { break }
                }
                #expect(Set(consumers[0].assignment).isDisjoint(with: consumers[1].assignment))

                let producer = try TestEnvironment.producer()
                let results = try await producer.send(batch: (0..<total).map {
                    KafkaProducerMessage(topic: topic, key: "k\($0)", value: "v\($0)")
                })
                #expect(results.allSatisfy { (try? $0.get()) != nil })
                await producer.shutdown()

                // Collect what both members read until every message has arrived.
                for await (id, positions) in readings {
                    seen[id, default: []].append(contentsOf: positions)
                    if seen.values.map(\.count).reduce(0, +) >= total { break }
                }
                group.cancelAll()
            }
            for consumer in consumers { await consumer.close() }
            assignmentsContinuation.finish()

            readingsContinuation.finish()
            let all = seen
            let everything = all[0]! + all[1]!
            #expect(everything.count == total)
            #expect(Set(everything).count == total, "a message was delivered twice")
            #expect(!all[0]!.isEmpty && !all[1]!.isEmpty, "both members must have read part of the topic")
            let partitionsOf = { (id: Int) in Set(all[id]!.map { $0.split(separator: ":")[0] }) }
            #expect(partitionsOf(0).isDisjoint(with: partitionsOf(1)))
        }
    }

    @Test func committedOffsetsSurviveARestartAndSeekRereadsFromAStoredOffset() async throws {
        try await TestEnvironment.withTopic(partitions: 1) { topic in
            let producer = try TestEnvironment.producer()
            _ = try await producer.send(batch: (0..<100).map { KafkaProducerMessage(topic: topic, key: "k", value: "m\($0)") })
            await producer.shutdown()
            let partition = KafkaTopicPartition(topic: topic, partition: 0)
            let group = TestEnvironment.uniqueName("restart")

            // First life: read 60 messages, commit "next is 60", leave.
            let first = try KafkaConsumer(configuration: TestEnvironment.consumerConfiguration(group: group), topics: [topic], logger: TestEnvironment.logger)
            try await within(.seconds(30)) {
                var read = 0
                for try await batch in first.batches {
                    read += batch.messages.count
                    if read >= 60 { break }
                }
            }
            try await first.commit([partition: 60])
            #expect(try await first.committedOffsets(for: [partition])[partition] == 60)
            await first.close()

            // Second life, same group: starts at the committed offset.
            let second = try KafkaConsumer(configuration: TestEnvironment.consumerConfiguration(group: group), topics: [topic], logger: TestEnvironment.logger)
            let resumedAt = try await within(.seconds(30)) { () -> Int64? in
                for try await batch in second.batches { return batch.messages.first?.offset }
                return nil
            }
            #expect(resumedAt == 60)

            // An explicit seek on an owned partition re-reads from there.
            try await second.seek([partition: 10])
            let afterSeek = try await within(.seconds(30)) { () -> [String] in
                for try await batch in second.batches { return batch.messages.prefix(3).map { String(decoding: $0.value, as: UTF8.self) } }
                return []
            }
            #expect(afterSeek == ["m10", "m11", "m12"])
            await second.close()

            // A new member whose offsets are stored elsewhere (PostgreSQL, in the workers) starts where it is told.
            let stored = try KafkaConsumer(
                configuration: TestEnvironment.consumerConfiguration(group: TestEnvironment.uniqueName("stored")), topics: [topic],
                rebalanceHandler: KafkaRebalanceHandler(onAssign: { partitions in
                    Dictionary(uniqueKeysWithValues: partitions.map { ($0, KafkaStartOffset.offset(25)) })
                }), logger: TestEnvironment.logger)
            let storedStart = try await within(.seconds(30)) { () -> Int64? in
                for try await batch in stored.batches { return batch.messages.first?.offset }
                return nil
            }
            #expect(storedStart == 25)
            await stored.close()
        }
    }

    @Test func assignmentHandlerFailureSurfacesInTheBatches() async throws {
        try await TestEnvironment.withTopic(partitions: 1) { topic in
            struct OffsetsUnavailable: Error {}
            let consumer = try KafkaConsumer(
                configuration: TestEnvironment.consumerConfiguration(group: TestEnvironment.uniqueName("failing")), topics: [topic],
                rebalanceHandler: KafkaRebalanceHandler(onAssign: { _ in throw OffsetsUnavailable() }), logger: TestEnvironment.logger)
            await #expect(throws: KafkaError.self) {
                try await within(.seconds(30)) { for try await _ in consumer.batches {} }
            }
            #expect(consumer.assignment.isEmpty)
            await consumer.close()
        }
    }

    @Test func producerPointedAtADeadBrokerFailsWithinItsDeliveryTimeout() async throws {
        var configuration = KafkaProducerConfiguration(client: KafkaClientConfiguration(bootstrapServers: ["127.0.0.1:\(try freeLoopbackPort())"]))
        configuration.deliveryTimeout = .seconds(3)
        let producer = try KafkaProducer(configuration: configuration, logger: TestEnvironment.logger)
        let start = ContinuousClock.now
        let error = await #expect(throws: KafkaError.self) {
            try await within(.seconds(30)) { try await producer.send(KafkaProducerMessage(topic: "nowhere", key: "k", value: "v")) }
        }
        #expect(error?.code == .messageDelivery)
        #expect(error?.rdKafkaName == "_MSG_TIMED_OUT")
        #expect(ContinuousClock.now - start < .seconds(15))
        await producer.shutdown()
        await #expect(throws: KafkaError.self) { try await producer.send(KafkaProducerMessage(topic: "nowhere", key: "k", value: "v")) }
    }

    @Test func adminCreatesDescribesAndTellsIncarnationsApart() async throws {
        let admin = try TestEnvironment.admin()
        let topic = TestEnvironment.uniqueName("admin")
        let created = try await admin.createTopics([KafkaNewTopic(name: topic, partitions: 3, configs: ["retention.ms": "3600000"])])
        #expect(created[topic] == .created)
        #expect(try await admin.createTopics([KafkaNewTopic(name: topic, partitions: 3)])[topic] == .alreadyExists)
        let first = try #require(try await admin.describeTopics([topic])[topic])
        #expect(first.partitionCount == 3)
        #expect(!first.topicID.isEmpty)
        #expect(try await admin.describeConfigs(topic: topic)?["retention.ms"] == "3600000")
        #expect(try await admin.describeTopics([TestEnvironment.uniqueName("missing")]).isEmpty)

        // Deleting and creating again is a new incarnation of the log: a new topic id.
        try await admin.deleteTopics([topic])
        _ = try await admin.createTopics([KafkaNewTopic(name: topic, partitions: 3)])
        let second = try #require(try await admin.describeTopics([topic])[topic])
        #expect(second.topicID != first.topicID)
        try await admin.deleteTopics([topic])
    }

    @Test func runtimeIsCurrent() throws {
        try KafkaRuntime.requireSupported()
        #expect(!KafkaRuntime.version.hasPrefix("2.0."))
    }
}
