import Foundation
import NIOHTTP1
import PostgresNIO
import ScoreboardCore
import ScoreboardKafka
import ScoreboardPostgres
import Testing

/// A confirmed fraud flag carried through the stream (issue 11, "Confirm bans the user"), with real gateway, worker and
/// push processes: the ban reaches the worker that owns the user's events, which takes them off every board in
/// PostgreSQL and Redis and pushes the re-ranked boards to an open SSE subscriber and to the push process's board
/// memory; the user's events still in the log after the ban are stored and not counted; a second delivery of the ban
/// changes nothing; reviews of an unknown or an already reviewed flag change nothing.
extension ScorePath {
@Suite(.serialized, .timeLimit(.minutes(4)))
struct BanPathTests {
    @Test func aConfirmedBanLeavesEveryBoardItsStreamsAndTheMemoryAndLaterEventsDoNotCount() async throws {
        try await withScorePathWorld(redisDatabase: 41) { world in
            let worker = try await world.start("worker")
            defer { withExtendedLifetime(worker) {} }
            let push = try await world.start("push")
            let gateway = try await world.gateway()
            try await ScorePathTests().waitUntilReady(port: push.port)
            let tag = world.namespace.dropLast()
            let (mallory, ann, bob) = ("mallory-\(tag)", "ann-\(tag)", "bob-\(tag)")
            let admin = try await world.token("root-\(tag)", role: .admin)
            let malloryToken = try await world.token(mallory, region: "eu")
            let annToken = try await world.token(ann, region: "eu"), bobToken = try await world.token(bob, region: "us")
            let allTime = BoardKey(window: .allTime, period: "all", dimension: .global, value: nil)
            let europe = BoardKey(window: .allTime, period: "all", dimension: .region, value: "eu")

            @Sendable func score(_ token: String, _ action: String) async throws -> Int {
                try await HTTPConnection.with(port: gateway.port) { connection in
                    let issued = try await connection.postJSON("/v1/actions/\(action)/token", token: token, json: [:] as [String: String])
                    let body = ["action": action, "actionToken": issued.json["actionToken"] as? String ?? "", "idempotencyKey": UUID().uuidString.lowercased()]
                    return try await connection.postJSON("/v1/scores", token: token, json: body).status
                }
            }
            @Sendable func entries(_ path: String) async throws -> [String] {
                try await HTTPConnection.with(port: push.port) { connection in
                    let answer = try await connection.send(.GET, path)
                    return (answer.json["entries"] as? [[String: Any]] ?? []).map { "\($0["userId"] ?? "") #\($0["rank"] ?? "")" }
                }
            }

            // Mallory: nine quests at once (90 points, and a rapid-actions flag); ann 80 points, bob 40 in another region.
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<9 { group.addTask { try await score(malloryToken, "complete-quest") } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(statuses == Array(repeating: 202, count: 9))
            for token in [annToken, annToken, bobToken] { #expect(try await score(token, "pvp-win") == 202) }
            try await within(.seconds(60)) {
                while try await world.redisBoard(allTime) != [mallory: 90, ann: 80, bob: 40] { try await Task.sleep(for: .milliseconds(100)) }
            }
            // Read once, so that the push process holds both boards in its memory (reloaded from Redis only after a
            // minute): what it answers below is what the removal in the updates did to that memory.
            #expect(try await entries("/v1/leaderboards/all-time/global?limit=10") == ["\(mallory) #1", "\(ann) #2", "\(bob) #3"])
            #expect(try await entries("/v1/leaderboards/all-time/region/eu?limit=10") == ["\(mallory) #1", "\(ann) #2"])

            // An open SSE subscriber of the global board, from its snapshot.
            let view = BoardView(period: "all")
            let stream = Task { try await followSSE(port: push.port, stream: allTime.stream, view: view) }
            defer { stream.cancel() }
            try await within(.seconds(10)) { while view.scores[bob] == nil { try await Task.sleep(for: .milliseconds(50)) } }

            var postgres = TestEnvironment.settings.postgres
            postgres.schema = world.schema
            try await PostgresStore(configuration: postgres, logger: TestEnvironment.logger).withRunningClient { store in
                let ledger = ScoreLedger(client: store.client, consumerGroup: "", logger: TestEnvironment.logger)
                let flagID = try await within(.seconds(60)) {
                    while true {
                        if let flag = try await ledger.fraudFlags(FraudFlagQuery(userID: mallory)).first { return flag.flag.flagID }
                        try await Task.sleep(for: .milliseconds(200))
                    }
                }
                @Sendable func review(_ id: String) async throws -> HTTPAnswer {
                    try await HTTPConnection.with(port: push.port) { connection in
                        try await connection.postJSON("/v1/admin/fraud-flags/\(id)/review", token: admin, json: ["decision": "confirm", "note": "a bot"])
                    }
                }
                @Sendable func storedTotals(of user: String) async throws -> Int {
                    try await store.client.queryRows("SELECT count(*) FROM member_totals WHERE user_id = \(user)", logger: TestEnvironment.logger)
                        .first!.decode(Int.self)
                }
                #expect(try await storedTotals(of: mallory) > 0)

                let reviewed = try await review(flagID)
                #expect(reviewed.status == 200 && reviewed.json["status"] as? String == "confirmed")

                // The worker applies the ban: off both boards in Redis, PostgreSQL, the push memory and the open stream;
                // the members below move up.
                try await within(.seconds(30)) {
                    while true {
                        let (global, regional) = (try await world.redisBoard(allTime), try await world.redisBoard(europe))
                        if global == [ann: 80, bob: 40] && regional == [ann: 80] { return }
                        try await Task.sleep(for: .milliseconds(100))
                    }
                }
                #expect(try await storedTotals(of: mallory) == 0)
                #expect(try await ledger.page(of: allTime, offset: 0, limit: 10).entries.map { "\($0.userID) #\($0.rank)" } == ["\(ann) #1", "\(bob) #2"])
                try await within(.seconds(10)) {
                    while try await entries("/v1/leaderboards/all-time/global?limit=10") != ["\(ann) #1", "\(bob) #2"] {
                        try await Task.sleep(for: .milliseconds(100))
                    }
                }
                // The regional board's removal is a message of its own (another stream, maybe another partition):
                // awaited like the global one, not assumed to have arrived with it.
                try await within(.seconds(10)) {
                    while try await entries("/v1/leaderboards/all-time/region/eu?limit=10") != ["\(ann) #1"] {
                        try await Task.sleep(for: .milliseconds(100))
                    }
                }
                try await within(.seconds(10)) { while view.scores[mallory] != nil { try await Task.sleep(for: .milliseconds(50)) } }
                #expect(view.scores == [ann: 80, bob: 40])

                // Mallory's events still in the log after the ban (published straight to the topic, as events accepted
                // before the gateway learnt of the ban would be): stored, not counted. Then the ban delivered again,
                // and one of bob's events behind it on the same partition: the ban changes nothing the second time.
                let producer = try KafkaProducer(configuration: .init(client: .init(bootstrapServers: [world.kafkaBrokers])), logger: TestEnvironment.logger)
                let topic = world.namespace + TopicNames.scoreEventsBase
                func event(_ user: String) -> ScoreEvent {
                    ScoreEvent(
                        eventID: UUID().uuidString.lowercased(), userID: user, action: "pvp-win", points: 40,
                        occurredAt: Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000)), region: "eu", guild: nil,
                        idempotencyKey: UUID().uuidString.lowercased(), source: .gameServer)
                }
                let late = event(mallory)
                let again = UserBanned(userID: mallory, flagID: flagID, bannedAt: Int64(Date().timeIntervalSince1970 * 1000))
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await producer.run() }
                    _ = try await producer.send(try KafkaScoreEvents.message(for: late, topic: topic))
                    _ = try await producer.send(try KafkaScoreEvents.message(for: again, topic: topic))
                    // Keyed by mallory, so it lands on her partition, behind the ban.
                    _ = try await producer.send(KafkaProducerMessage(
                        topic: topic, key: Array(mallory.utf8), value: Array(try JSONEncoder().encode(event(bob)))))
                    group.cancelAll()
                }
                try await within(.seconds(30)) {
                    while try await world.redisBoard(allTime)[bob] != 80 { try await Task.sleep(for: .milliseconds(100)) }
                }
                #expect(try await ledger.recentEvents(userID: mallory, limit: 20).contains { $0.eventID == late.eventID }, "stored as evidence")
                #expect(try await storedTotals(of: mallory) == 0)
                #expect(try await world.redisBoard(allTime) == [ann: 80, bob: 80])
                #expect(try await world.redisBoard(europe) == [ann: 80, bob: 40])
                try await within(.seconds(10)) { while view.scores[bob] != 80 { try await Task.sleep(for: .milliseconds(50)) } }
                #expect(view.scores[mallory] == nil)

                // An unknown flag, and the confirmed one again: 404 and 409, nothing changed (one audit entry).
                let unknown = try await review(UUID().uuidString.lowercased())
                #expect(unknown.status == 404 && unknown.problemType == "unknown-fraud-flag")
                let repeated = try await review(flagID)
                #expect(repeated.status == 409 && repeated.problemType == "fraud-flag-already-reviewed")
                #expect(try await ledger.fraudAudit(userID: mallory, from: nil, to: nil, limit: 10).count == 1)
                #expect(try await world.redisBoard(allTime) == [ann: 80, bob: 80])

                // Bad input: lifting the confirmed ban at the gateway (the workers would keep not counting her events,
                // so her scores would be accepted and never count): refused with 409, the ban stays, her scores 403;
                // bob's ban set and lifted by an admin works as before.
                @Sendable func setBan(_ method: HTTPMethod, _ user: String) async throws -> HTTPAnswer {
                    try await HTTPConnection.with(port: gateway.port) { connection in
                        try await connection.send(method, "/v1/admin/bans/\(user)", headers: ["Authorization": "Bearer \(admin)"])
                    }
                }
                let lift = try await setBan(.DELETE, mallory)
                #expect(lift.status == 409 && lift.problemType == "ban-confirmed-by-review")
                #expect(try await setBan(.PUT, mallory).status == 204, "a PUT on a confirmed ban is accepted and keeps it confirmed")
                #expect(try await setBan(.DELETE, mallory).status == 409)
                // A banned user is refused at the action token already.
                @Sendable func mint(_ token: String) async throws -> HTTPAnswer {
                    try await HTTPConnection.with(port: gateway.port) { connection in
                        try await connection.postJSON("/v1/actions/pvp-match/token", token: token, json: [:] as [String: String])
                    }
                }
                let refused = try await mint(malloryToken)
                #expect(refused.status == 403 && refused.problemType == "banned")
                #expect(try await setBan(.PUT, bob).status == 204)
                #expect(try await mint(bobToken).status == 403)
                #expect(try await setBan(.DELETE, bob).status == 204)
                #expect(try await score(bobToken, "pvp-match") == 202)
            }
        }
    }
}
}
