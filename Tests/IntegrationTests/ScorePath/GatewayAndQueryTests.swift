import Foundation
import HummingbirdWSClient
import Logging
import ScoreboardCore
import ScoreboardHTTP
import ScoreboardKafka
import Synchronization
import Testing

/// The parts of the score path the big scenarios do not reach: operator actions, the rejections topic, around-me,
/// closed windows and archives, rebuilds, the personal channel, heartbeats, and `token mint`.
extension ScorePath {
@Suite(.serialized, .timeLimit(.minutes(4)))
struct GatewayAndQueryTests {
    @Test func operatorsRejectionsQueriesArchivesRebuildsAndPersonalStreams() async throws {
        try await withScorePathWorld(redisDatabase: 10) { world in
            let worker = try await world.start("worker")
            let push = try await world.start("push", arguments: ["--heartbeat-seconds", "1"])
            let gateway = try await world.gateway()
            try await ScorePathTests().waitUntilReady(port: push.port)
            let tag = world.namespace.dropLast()
            let alice = "alice-\(tag)", bob = "bob-\(tag)", carol = "carol-\(tag)"
            let admin = try await world.token("ops-\(tag)", role: .admin)

            // `scoreboard token mint` makes a token the gateway accepts.
            let minted = try run(["token", "mint", "--user", alice, "--role", "player", "--region", "r0", "--guild", "g0"], environment: world.environment)
            let aliceToken = minted.trimmingCharacters(in: .whitespacesAndNewlines)

            // The personal channel, opened before Alice scores.
            let personal = EventLog()
            let personalStream = Task {
                try await readServerSentEvents(port: push.port, path: "/v1/streams/me", headers: ["Authorization": "Bearer \(aliceToken)"], comments: true) { event in
                    personal.append(event)
                    return true
                }
            }
            try await within(.seconds(10)) { while personal.comments == 0 { try await Task.sleep(for: .milliseconds(50)) } }

            try await HTTPConnection.with(port: gateway.port) { connection in
                func score(_ token: String, action: String = "pvp-win") async throws -> HTTPAnswer {
                    let issued = try await connection.postJSON("/v1/actions/\(action)/token", token: token, json: [:] as [String: String])
                    guard let actionToken = issued.json["actionToken"] as? String else { return issued }
                    return try await connection.postJSON(
                        "/v1/scores", token: token, json: ["action": action, "actionToken": actionToken, "idempotencyKey": UUID().uuidString])
                }
                #expect(try await score(aliceToken).status == 202)
                #expect(try await score(aliceToken).status == 202)
                let bobToken = try await world.token(bob, region: "r0", guild: "g1")
                #expect(try await score(bobToken).status == 202)
                let carolToken = try await world.token(carol, region: "r1", guild: "g0")
                #expect(try await score(carolToken, action: "complete-quest").status == 202)

                // A ban refuses the user's scores (403 banned); lifting it lets them score again.
                #expect(try await connection.send(.PUT, "/v1/admin/bans/\(bob)", headers: ["Authorization": "Bearer \(admin)"]).status == 204)
                #expect(try await score(bobToken).problemType == "banned")
                #expect(try await connection.send(.DELETE, "/v1/admin/bans/\(bob)", headers: ["Authorization": "Bearer \(admin)"]).status == 204)
                #expect(try await score(bobToken).status == 202)
                // Only admins may ban.
                #expect(try await connection.send(.PUT, "/v1/admin/bans/\(carol)", headers: ["Authorization": "Bearer \(bobToken)"]).status == 403)

                // A revoked bearer token is refused (401 token-revoked), other tokens of the user are not.
                let revocable = try await world.token(carol, region: "r1", guild: "g0")
                let jti = try #require(Self.claim("jti", of: revocable))
                let revoked = try await connection.postJSON(
                    "/v1/admin/revocations", token: admin, json: ["jti": jti, "expiresAt": Int(Date().timeIntervalSince1970) + 3600])
                #expect(revoked.status == 204)
                #expect(try await score(revocable).problemType == "token-revoked")
                #expect(try await score(carolToken, action: "complete-quest").status == 202)

                // A body over the 4 KiB limit.
                let large = try await connection.postJSON(
                    "/v1/scores", token: aliceToken, json: ["action": "pvp-win", "actionToken": String(repeating: "x", count: 5000), "idempotencyKey": UUID().uuidString])
                #expect(large.status == 413 && large.problemType == "body-too-large")

                // Operators: liveness, readiness and Prometheus metrics that count what happened.
                #expect(try await connection.send(.GET, "/health/live").status == 200)
                #expect(try await connection.send(.GET, "/health/ready").status == 200)
                let metrics = String(decoding: try await connection.send(.GET, "/metrics").body, as: UTF8.self)
                #expect(metrics.contains("gateway_events_accepted_total"))
                #expect(metrics.contains(#"gateway_rejections_total{reason="banned"}"#))

                // An unknown action, and no token at all.
                #expect(try await connection.postJSON("/v1/actions/no-such-action/token", token: aliceToken, json: [:] as [String: String]).problemType == "unknown-action")
                #expect(try await connection.postJSON("/v1/scores", token: nil, json: [:] as [String: String]).problemType == "unauthenticated")
            }

            // Every refusal went to the rejections topic with its problem type as the reason.
            let reasons = try await rejectionReasons(world: world, atLeast: 4)
            #expect(reasons.contains("banned") && reasons.contains("token-revoked") && reasons.contains("unknown-action") && reasons.contains("unauthenticated"))

            // Expected standings: alice 80 (2 pvp-win), bob 80, carol 20 on the all-time global board.
            let allTime = BoardKey(window: .allTime, period: "all", dimension: .global, value: nil)
            try await within(.seconds(30)) { while try await world.redisBoard(allTime) != [alice: 80, bob: 80, carol: 20] { try await Task.sleep(for: .milliseconds(100)) } }

            try await HTTPConnection.with(port: push.port) { connection in
                // Around-me with competition ranks: alice and bob tie at rank 1, carol is 3rd.
                let around = try await connection.send(.GET, "/v1/leaderboards/all-time/global/around/\(carol)?radius=1")
                let entries = around.json["entries"] as? [[String: Any]] ?? []
                // Redis orders the tie by member, descending: bob, alice, carol; one place either side of carol.
                #expect(entries.map { $0["userId"] as! String } == [alice, carol])
                #expect(entries.map { ($0["rank"] as! NSNumber).intValue } == [1, 3])
                let notOnBoard = try await connection.send(.GET, "/v1/leaderboards/all-time/global/around/nobody-\(tag)")
                #expect(notOnBoard.problemType == "not-found")
                let bad = try await connection.send(.GET, "/v1/leaderboards/hourly/global")
                #expect(bad.problemType == "invalid-parameter")
                // A date that does not exist names no period of the board (404); a value not shaped like a period is 400.
                let noSuchPeriod = try await connection.send(.GET, "/v1/leaderboards/daily/global?period=2026-02-30")
                #expect(noSuchPeriod.status == 404 && noSuchPeriod.problemType == "not-found")
                let badPeriod = try await connection.send(.GET, "/v1/leaderboards/daily/global?period=yesterday")
                #expect(badPeriod.problemType == "invalid-parameter")
                // The user's standing on every board.
                let standing = try await connection.send(.GET, "/v1/users/\(alice)/standing")
                let standings = standing.json["standings"] as? [[String: Any]] ?? []
                #expect(standings.count == 12)
                #expect(standings.allSatisfy { ($0["rank"] as? NSNumber)?.intValue == 1 })
            }

            // The personal channel carried alice's own changes, and heartbeats.
            try await within(.seconds(10)) { while personal.updates(for: alice) < 2 { try await Task.sleep(for: .milliseconds(50)) } }
            #expect(personal.updates(for: bob) == 0)
            #expect(personal.comments >= 2)
            personalStream.cancel()

            // A closed window: an event of a day long past (as a replayed old event would be). Its Redis key expires at
            // once (the retention is over), and the day stays queryable from PostgreSQL's final standings.
            let oldDay = "2026-01-05"
            let old = ScoreEvent(
                eventID: UUID().uuidString.lowercased(), userID: carol, action: "pvp-win", points: 40,
                occurredAt: Timestamp(millisecondsSinceEpoch: 1_767_614_400_000), region: "r1", guild: "g0", idempotencyKey: UUID().uuidString.lowercased(),
                source: .gameServer)
            #expect(LeaderboardWindow.daily.period(containing: old.occurredAt).key == oldDay)
            let producer = try KafkaProducer(configuration: .init(client: .init(bootstrapServers: [world.kafkaBrokers])), logger: TestEnvironment.logger)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await producer.run() }
                _ = try await producer.send(KafkaProducerMessage(
                    topic: world.namespace + TopicNames.scoreEventsBase, key: Array(carol.utf8), value: Array(try JSONEncoder().encode(old))))
                group.cancelAll()
            }
            let archived = try await within(.seconds(30)) {
                try await HTTPConnection.with(port: push.port) { connection in
                    while true {
                        let answer = try await connection.send(.GET, "/v1/leaderboards/daily/global?period=\(oldDay)")
                        if (answer.json["entries"] as? [[String: Any]])?.count == 1 { return answer.json["source"] as? String }
                        try await Task.sleep(for: .milliseconds(100))
                    }
                }
            }
            #expect(archived == "archive")
            try await HTTPConnection.with(port: push.port) { connection in
                let around = try await connection.send(.GET, "/v1/leaderboards/daily/region/r1/around/\(carol)?period=\(oldDay)&radius=3")
                #expect(around.json["source"] as? String == "archive")
                #expect((around.json["entries"] as? [[String: Any]])?.map { "\($0["userId"]!) #\($0["rank"]!) \($0["score"]!)" } == ["\(carol) #1 40"])
                #expect((around.json["members"] as? NSNumber)?.intValue == 1)
            }
            let oldKey = BoardKey(window: .daily, period: oldDay, dimension: .global, value: nil)
            #expect(try await world.redis.send(["EXISTS", oldKey.redisKey]).integer == 0)

            // `scoreboard rebuild` restores lost Redis boards from PostgreSQL.
            try await world.redis.send(["DEL", allTime.redisKey])
            _ = try run(["rebuild"], environment: world.environment)
            #expect(try await world.redisBoard(allTime) == [alice: 80, bob: 80, carol: 60])
            _ = worker
        }
    }

    /// A real gateway process whose Redis is killed and started again: 503 problems with Retry-After while it is
    /// down (never 500), readiness that names Redis without its address, and 202s again once it is back, with no
    /// restart of the gateway.
    @Test func aRedisOutageIsA503AndTheGatewayRecoversByItself() async throws {
        let redisServer = try await PrivateRedis()
        try await withScorePathWorld(redisDatabase: 10) { world in try await redisOutage(world: world, redisServer: redisServer) }
    }

    func redisOutage(world: ScorePathWorld, redisServer: PrivateRedis) async throws {
        var environment = world.environment
        environment["SCOREBOARD_REDIS_URL"] = redisServer.url
        let gateway = try await RoleProcess(
            "gateway", arguments: ["--per-ip-per-minute", "1000000", "--per-user-per-minute", "1000"], environment: environment)
        let user = "outage-\(world.namespace.dropLast())"
        let token = try await world.token(user)
        try await HTTPConnection.with(port: gateway.port) { connection in
            func score() async throws -> HTTPAnswer {
                let issued = try await connection.postJSON("/v1/actions/pvp-win/token", token: token, json: [:] as [String: String])
                guard let actionToken = issued.json["actionToken"] as? String else { return issued }
                return try await connection.postJSON(
                    "/v1/scores", token: token, json: ["action": "pvp-win", "actionToken": actionToken, "idempotencyKey": UUID().uuidString])
            }
            // Before the outage the gateway accepts. A 503 here is the shared broker acknowledging after the gateway's
            // second on a loaded box, not what this test is about: a new score is tried (a few times at most).
            var first = try await score()
            for _ in 0..<10 where first.status == 503 { first = try await score() }
            #expect(first.status == 202)

            redisServer.kill()
            let down = try await score()
            #expect(down.status == 503 && down.problemType == "dependency-unavailable" && down.headers["retry-after"] != nil)
            let ready = try await connection.send(.GET, "/health/ready")
            #expect(ready.status == 503 && ready.json["redis"] as? String == "unreachable")
            #expect(!String(decoding: ready.body, as: UTF8.self).contains("\(redisServer.port)"))

            try await redisServer.start()
            // The connection is this task's (inout), so the wait is a deadline loop rather than `within`.
            let deadline = ContinuousClock.now + .seconds(30)
            var answer = try await score()
            while answer.status != 202, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
                answer = try await score()
            }
            #expect(answer.status == 202, "the gateway did not recover once Redis was back")
        }
        #expect(gateway.isRunning)
    }

    static func claim(_ name: String, of token: String) -> String? {
        let parts = token.split(separator: ".")
        guard parts.count == 3, let data = Base64URL.decode(String(parts[1])),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        return json[name] as? String
    }

    func rejectionReasons(world: ScorePathWorld, atLeast count: Int) async throws -> Set<String> {
        var configuration = TestEnvironment.consumerConfiguration(group: TestEnvironment.uniqueName("rejections"))
        configuration.client = .init(bootstrapServers: [world.kafkaBrokers])
        configuration.sessionTimeout = .seconds(3)
        let consumer = try KafkaConsumer(
            configuration: configuration, topics: [world.namespace + TopicNames.rejectionsBase],
            rebalanceHandler: KafkaRebalanceHandler(onAssign: { Dictionary(uniqueKeysWithValues: $0.map { ($0, .beginning) }) }),
            logger: TestEnvironment.logger)
        let reasons = try await within(.seconds(30)) {
            var reasons: [String] = []
            for try await batch in consumer.batches {
                for message in batch.messages {
                    reasons.append(try JSONDecoder().decode(Rejection.self, from: Data(message.value)).reason)
                }
                if reasons.count >= count { break }
            }
            return Set(reasons)
        }
        await consumer.close()
        return reasons
    }

    /// Runs a `scoreboard` command to its end and returns its standard output.
    func run(_ arguments: [String], environment: [String: String]) throws -> String {
        let process = Process()
        process.executableURL = Repository.executable
        process.arguments = arguments
        process.environment = Repository.environment(environment)
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "scoreboard \(arguments.joined(separator: " "))")
        return String(decoding: data, as: UTF8.self)
    }
}
}

/// What a personal stream received.
final class EventLog: Sendable {
    private let state = Mutex<(events: [ServerSentEvent], comments: Int)>(([], 0))

    func append(_ event: ServerSentEvent) {
        state.withLock { state in
            if event.event == nil && event.data.isEmpty { state.comments += 1 } else { state.events.append(event) }
        }
    }

    var comments: Int { state.withLock { $0.comments } }

    func updates(for user: String) -> Int {
        state.withLock { state in
            state.events.filter { event in
                let members = (event.json["update"] as? [String: Any])?["members"] as? [[String: Any]] ?? []
                return members.contains { $0["userId"] as? String == user }
            }.count
        }
    }
}
