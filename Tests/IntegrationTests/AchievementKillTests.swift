import Foundation
import ScoreboardCore
import ScoreboardKafka
import ScoreboardPostgres
import Testing

/// Issue 11's replay test on real processes: a worker killed with SIGKILL twice while score events arrive, and
/// restarted, gives each player exactly their accepted points in the achievement progress, and every unlock once: none
/// lost, none twice. The push role's endpoint reads them back.
extension ScorePath {
@Suite(.serialized, .timeLimit(.minutes(6)))
struct AchievementKillTests {
    @Test func aWorkerKilledTwiceLosesNoUnlockAndDoublesNone() async throws {
        try await withScorePathWorld(redisDatabase: 17) { world in
            let workers = RoleList()
            workers.append(try await world.start("worker"))
            let push = try await world.start("push")
            let gateway = try await world.gateway()
            try await ScorePathTests().waitUntilReady(port: push.port)
            let server = try await world.token("match-server-1", role: .gameServer)
            let tag = world.namespace.dropLast()
            let users = (0..<90).map { "a\($0)-\(tag)" }

            // Three rounds of one pvp-win (40 points) per user, in batches of 30 users: 120 points each reaches
            // beginner (100) on the third. The worker is killed after the third and the sixth batch.
            var accepted: [String: Int] = [:]
            for round in 0..<3 {
                for group in 0..<3 {
                    let batchUsers = Array(users[(group * 30)..<((group + 1) * 30)])
                    let events = batchUsers.map { ["userId": $0, "action": "pvp-win", "idempotencyKey": UUID().uuidString.lowercased(), "region": "r1"] }
                    let answer = try await HTTPConnection.with(port: gateway.port) { try await $0.postJSON("/v1/events:batch", token: server, json: ["events": events]) }
                    #expect(answer.status == 200)
                    let results = answer.json["results"] as? [[String: Any]] ?? []
                    for (user, result) in zip(batchUsers, results) where (result["status"] as? NSNumber)?.intValue == 202 {
                        accepted[user, default: 0] += 1
                    }
                    if (round * 3 + group) % 3 == 2 && round < 2 {
                        workers.first.kill()
                        workers.replaceFirst(with: try await world.start("worker"))
                    }
                }
            }
            #expect(accepted.values.reduce(0, +) > 200)
            let recount = accepted

            var postgres = TestEnvironment.settings.postgres
            postgres.schema = world.schema
            let store = PostgresStore(configuration: postgres, logger: TestEnvironment.logger)
            let stored = try await store.withRunningClient { store -> Set<String> in
                var stored: Set<String> = []
                let ledger = ScoreLedger(client: store.client, consumerGroup: "", logger: TestEnvironment.logger)
                // Once the restarted worker has caught up: every player's progress holds exactly their accepted points.
                try await within(.seconds(120)) {
                    while true {
                        var caughtUp = true
                        for (user, count) in recount {
                            let progress = try await ledger.playerProgress(userID: user)
                            guard progress?.totalPoints == Int64(40 * count) else { caughtUp = false; break }
                        }
                        if caughtUp { return }
                        try await Task.sleep(for: .milliseconds(200))
                    }
                }
                for (user, count) in recount.sorted(by: { $0.key < $1.key }) {
                    let progress = try #require(try await ledger.playerProgress(userID: user))
                    #expect(progress.actionCounts == ["pvp-win": count], "\(user)")
                    let unlocks = try await ledger.achievementUnlocks(userID: user)
                    // None twice (one record per id, and no id but the user's own achievements), none lost.
                    #expect(Set(unlocks.map(\.achievementID)).count == unlocks.count, "\(user)")
                    let scoreUnlocks = unlocks.filter { $0.kind == .score }.map(\.achievementID)
                    #expect(scoreUnlocks == (40 * count >= 100 ? ["beginner"] : []), "\(user)")
                    #expect(unlocks.allSatisfy { $0.kind == .score || $0.kind == .ranking }, "\(user)")
                    stored.formUnion(unlocks.map { AchievementNotification($0).id })
                }
                return stored
            }

            // Every stored unlock was announced on the notifications topic (a batch whose worker was killed between
            // its commit and its outputs by its next owner): none lost; a repeat is allowed, with the same id.
            let consumer = try KafkaConsumer(
                configuration: TestEnvironment.consumerConfiguration(group: TestEnvironment.uniqueName("notifications")),
                topics: [world.namespace + TopicNames.notificationsBase], logger: TestEnvironment.logger)
            let announced: Result<Set<String>, any Error>
            do {
                announced = .success(try await within(.seconds(90)) {
                    var seen: Set<String> = []
                    for try await batch in consumer.batches {
                        for message in batch.messages {
                            if let notification = try? JSONDecoder().decode(AchievementNotification.self, from: Data(message.value)) {
                                seen.insert(notification.id)
                            }
                        }
                        if stored.isSubset(of: seen) { break }
                    }
                    return seen
                })
            } catch { announced = .failure(error) }
            await consumer.close()
            #expect(stored.subtracting(try announced.get()).isEmpty, "stored but never announced")

            // The push role answers from the same rows.
            let someone = try #require(recount.first { $0.value == 3 }?.key)
            let answer = try await HTTPConnection.with(port: push.port) { try await $0.send(.GET, "/v1/users/\(someone)/achievements") }
            #expect(answer.status == 200)
            let unlocked = (answer.json["unlocked"] as? [[String: Any]] ?? []).compactMap { $0["achievement"] as? String }
            #expect(unlocked.contains("beginner"))
            #expect(try await HTTPConnection.with(port: push.port) { try await $0.send(.GET, "/v1/users/nobody-\(tag)/stats") }.status == 404)
        }
    }
}
}
