import Foundation
import HummingbirdWSClient
import Logging
import ScoreboardCore
import ScoreboardHTTP
import ScoreboardKafka
import Synchronization
import Testing

extension ScorePath {
@Suite(.serialized, .timeLimit(.minutes(4)))
struct ResumeAndOutageTests {
    /// 4. A client that disconnects, misses 50 updates and reconnects with its last sequence receives exactly those
    /// 50, as a client connected throughout saw them. The 50 scores come through the game-server batch endpoint.
    @Test func aReconnectingClientReceivesExactlyTheUpdatesItMissed() async throws {
        try await withScorePathWorld(redisDatabase: 14) { world in
            let worker = try await world.start("worker")
            let push = try await world.start("push")
            let gateway = try await world.gateway()
            try await ScorePathTests().waitUntilReady(port: push.port)
            let stream = BoardStream(window: .allTime, dimension: .global, value: nil)
            let server = try await world.token("match-server-1", role: .gameServer)
            let tag = world.namespace.dropLast()

            func batch(_ users: Range<Int>) async throws -> HTTPAnswer {
                let events = users.map { ["userId": "p\($0)-\(tag)", "action": "pvp-win", "idempotencyKey": UUID().uuidString.lowercased(), "region": "r1"] }
                return try await HTTPConnection.with(port: gateway.port) { try await $0.postJSON("/v1/events:batch", token: server, json: ["events": events]) }
            }

            // An observer stays connected throughout; the client under test follows until its first update.
            let observer = UpdateRecorder()
            let observing = Task { try await record(port: push.port, stream: stream, since: nil, into: observer) }
            let first = UpdateRecorder()
            let firstSession = Task { try await record(port: push.port, stream: stream, since: nil, into: first, stopAfter: 1) }
            try await within(.seconds(30)) { while !(observer.hasSnapshot && first.hasSnapshot) { try await Task.sleep(for: .milliseconds(50)) } }

            let warmUp = try await batch(0..<1)
            #expect(warmUp.status == 200)
            try await firstSession.value
            let lastSequence = try #require(first.sequences.last)

            // Disconnected: 50 scores by 50 users, one update each on the all-time global board.
            let answer = try await batch(1..<51)
            #expect(answer.status == 200)
            let results = answer.json["results"] as? [[String: Any]] ?? []
            #expect(results.count == 50 && results.allSatisfy { ($0["status"] as? NSNumber)?.intValue == 202 })
            try await within(.seconds(60)) { while observer.sequences.count < 51 { try await Task.sleep(for: .milliseconds(50)) } }
            let missed = observer.sequences.filter { $0 > lastSequence }
            #expect(missed.count == 50)

            // Reconnecting with the last sequence: exactly the missed updates, no snapshot.
            let resumed = UpdateRecorder()
            try await within(.seconds(30)) { try await record(port: push.port, stream: stream, since: lastSequence, into: resumed, stopAfter: 50) }
            #expect(resumed.sequences == missed)
            #expect(resumed.updates == observer.updates.filter { $0.sequence > lastSequence })
            #expect(!resumed.hasSnapshot)

            // A sequence the feed cannot vouch for (before anything it read) gets a fresh snapshot instead.
            let stale = UpdateRecorder()
            try await within(.seconds(30)) { try await record(port: push.port, stream: stream, since: -5, into: stale, stopAfterSnapshot: true) }
            #expect(stale.hasSnapshot)
            observing.cancel()
            _ = worker
        }
    }

    /// 5. With the broker stopped, the gateway answers 503 with Retry-After within about a second, and never 202.
    @Test func aStoppedBrokerGets503AndNever202() async throws {
        let broker = try await PrivateBroker()
        try await withScorePathWorld(redisDatabase: 15, kafkaBrokers: broker.address) { world in
            let gateway = try await world.gateway()
            let token = try await world.token("outage-user", region: "r0")

            try await HTTPConnection.with(port: gateway.port) { connection in
                func score() async throws -> (HTTPAnswer, Duration) {
                    let issued = try await connection.postJSON("/v1/actions/complete-quest/token", token: token, json: [:] as [String: String])
                    let body: [String: Any] = [
                        "action": "complete-quest", "actionToken": issued.json["actionToken"] as! String, "idempotencyKey": UUID().uuidString.lowercased(),
                    ]
                    let start = ContinuousClock.now
                    let answer = try await connection.postJSON("/v1/scores", token: token, json: body)
                    return (answer, ContinuousClock.now - start)
                }
                let (before, _) = try await score()
                #expect(before.status == 202)

                broker.kill()
                for _ in 0..<5 {
                    let (answer, elapsed) = try await score()
                    #expect(answer.status == 503)
                    #expect(answer.problemType == "broker-unavailable")
                    #expect(answer.headers["retry-after"] != nil)
                    #expect(elapsed < .milliseconds(1500), "answered after \(elapsed)")
                }
            }
        }
    }
}
}

/// Records what one stream connection receives.
final class UpdateRecorder: Sendable {
    struct Update: Equatable, Sendable { var sequence: Int64; var userID: String; var total: Int64 }
    private let state = Mutex<(snapshot: Bool, updates: [Update])>((false, []))

    var hasSnapshot: Bool { state.withLock { $0.snapshot } }
    var updates: [Update] { state.withLock { $0.updates } }
    var sequences: [Int64] { updates.map(\.sequence) }

    func apply(_ message: [String: Any]) {
        state.withLock { state in
            switch message["type"] as? String {
            case "snapshot": state.snapshot = true
            case "update":
                // One frame per message, with the board's changed members: one entry each, under the frame's sequence.
                let update = message["update"] as! [String: Any]
                for member in update["members"] as? [[String: Any]] ?? [] {
                    state.updates.append(Update(
                        sequence: (message["sequence"] as! NSNumber).int64Value, userID: member["userId"] as! String,
                        total: (member["total"] as! NSNumber).int64Value))
                }
            default: break
            }
        }
    }
}

/// Follows `stream` over the WebSocket until `stopAfter` updates (or a snapshot) arrived, or forever.
func record(port: Int, stream: BoardStream, since: Int64?, into recorder: UpdateRecorder, stopAfter: Int? = nil, stopAfterSnapshot: Bool = false) async throws {
    var logger = Logging.Logger(label: "test.ws")
    logger.logLevel = .error
    try await HummingbirdWSClient.WebSocketClient.connect(url: "ws://127.0.0.1:\(port)/v1/streams/ws", logger: logger) { inbound, outbound, _ in
        let subscribe = subscribeCommand(stream, since: since)
        try await outbound.write(.text(subscribe))
        for try await message in inbound.messages(maxSize: 1 << 24) {
            guard case .text(let text) = message, let json = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else { continue }
            recorder.apply(json)
            if stopAfterSnapshot && recorder.hasSnapshot { return }
            if let stopAfter, recorder.updates.count >= stopAfter { return }
        }
    }
}

extension ScorePath {
@Suite(.timeLimit(.minutes(3)))
struct GracefulShutdownTests {
    /// SIGTERM stops accepting, drains requests in flight and flushes the producer: the process exits 0 and every
    /// event it answered 202 for is on the topic.
    @Test func sigtermDrainsRequestsInFlightAndLosesNoAcceptedEvent() async throws {
        try await withScorePathWorld(redisDatabase: 9) { world in
            let gateway = try await RoleProcess(
                "gateway", arguments: ["--per-ip-per-minute", "1000000", "--per-user-per-minute", "1000"], environment: world.environment,
                acceptsSIGTERM: true)
            let server = try await world.token("server-\(world.namespace.dropLast())", role: .gameServer)
            let tally = DrainTally()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for lane in 0..<8 {
                    group.addTask {
                        // Each lane keeps sending batches until the gateway stops answering.
                        do {
                            try await HTTPConnection.with(port: gateway.port) { connection in
                                for round in 0..<1000 {
                                    let events = (0..<20).map { index in
                                        ["userId": "u\(lane)-\(round)-\(index)", "action": "complete-quest", "idempotencyKey": UUID().uuidString.lowercased()]
                                    }
                                    let answer = try await connection.postJSON("/v1/events:batch", token: server, json: ["events": events])
                                    tally.answered.add(1, ordering: .relaxed)
                                    // 503: the shared broker acknowledged after the gateway's second (a loaded box); such
                                    // events are not counted as accepted, and the check below is about those that were.
                                    #expect(answer.status == 200 || answer.status == 503, "batch answered \(answer.status)")
                                    for result in answer.json["results"] as? [[String: Any]] ?? [] {
                                        if let id = (result["accepted"] as? [String: Any])?["eventId"] as? String { tally.accepted.withLock { _ = $0.insert(id) } }
                                    }
                                }
                            }
                        } catch {
                            // The connection closed by the shutdown: expected once the drain is over.
                        }
                    }
                }
                try await within(.seconds(30)) { while tally.answered.load(ordering: .relaxed) < 16 { try await Task.sleep(for: .milliseconds(10)) } }
                #expect(try await gateway.terminate(within: .seconds(20)) == 0)
                try await group.waitForAll()
            }
            let ids = tally.accepted.withLock { $0 }
            #expect(!ids.isEmpty, "no event was accepted before the shutdown")

            // Every acknowledged event is on the topic.
            var configuration = TestEnvironment.consumerConfiguration(group: TestEnvironment.uniqueName("drain"))
            configuration.maxBatchSize = 5_000
            let consumer = try KafkaConsumer(
                configuration: configuration, topics: [world.namespace + TopicNames.scoreEventsBase],
                rebalanceHandler: KafkaRebalanceHandler(onAssign: { Dictionary(uniqueKeysWithValues: $0.map { ($0, .beginning) }) }),
                logger: TestEnvironment.logger)
            let found = try await within(.seconds(60)) {
                var found: Set<String> = []
                for try await batch in consumer.batches {
                    for message in batch.messages {
                        found.insert(try JSONDecoder().decode(ScoreEvent.self, from: Data(message.value)).eventID)
                    }
                    if ids.isSubset(of: found) { break }
                }
                return found
            }
            await consumer.close()
            #expect(ids.isSubset(of: found))
        }
    }
}
}

final class DrainTally: Sendable {
    let accepted = Mutex<Set<String>>([])
    let answered = Atomic<Int>(0)
}
