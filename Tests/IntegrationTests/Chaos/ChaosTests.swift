import Foundation
import HummingbirdWSClient
import Logging
import ScoreboardCore
import Synchronization
import Testing

/// Issue 9's fault suite: real role processes under steady traffic (``ChaosTraffic``), one fault per scenario, then
/// a recount of every board from the accepted requests (``ChaosRecount``). Each scenario prints
/// `chaos <name>: lost = N, duplicated = M, events accepted = X at Y/s, faults = F` and fails unless both are 0.
/// `scripts/chaos.sh [--full] [scenario...]` runs them; docs/reliability.md explains each and records the figures.
///
/// Inside the serialized ScorePath suite: these start servers and drive traffic, and must not run beside the other
/// score-path tests on a 2-core machine.
extension ScorePath {
@Suite(.serialized, .timeLimit(.minutes(ChaosMode.isFull ? 60 : 10)))
struct ChaosTests {
    // MARK: 1. Worker SIGKILL

    /// Two workers share the group; every few seconds one of them (in turn) is killed with SIGKILL and a new one is
    /// started, while traffic flows. Quick: about 8,000 events, a kill every 4 s; full: 1M events, a kill every 10 s.
    @Test func workerKilledEveryFewSeconds() async throws {
        try await withChaosWorld(redisDatabase: 23) { world in
            let (workers, push, gateway) = try await startRoles(world)
            let traffic = try await ChaosTraffic(world: world, gateways: [gateway.port])
            let target = ChaosMode.isFull ? 1_000_000 : ChaosMode.rate * 20
            let interval: Duration = ChaosMode.isFull ? .seconds(10) : .seconds(4)
            let running = Task { await traffic.run() }
            defer { traffic.stop() }
            var kills = 0
            while traffic.eventsSent < target {
                // The fault's schedule (not a wait for a condition): a kill every `interval` while traffic flows.
                try await Task.sleep(for: interval)
                let victim = kills % 2
                workers.kill(at: victim)
                workers.replace(at: victim, with: try await world.start("worker"))
                kills += 1
            }
            traffic.stop()
            await running.value
            var outcome = try await ChaosRecount(world: world, traffic: traffic).settle(pushPort: push.port)
            if outcome.details.first?.contains("applied nothing") == true {
                outcome.details.insert(contentsOf: await ChaosDiagnosis(world: world).report(workerPorts: workers.all.map(\.port)), at: 1)
            }
            ChaosSummary(name: "worker-sigkill", faults: kills).report(outcome, traffic: traffic)
        }
    }

    // MARK: 3. Rebuild under traffic

    /// `scoreboard rebuild` (all boards from PostgreSQL's totals) runs several times while the workers write the same
    /// boards; once traffic stops, every board must be exact: no rebuild may leave a total older than the workers'.
    @Test func rebuildWhileTrafficFlows() async throws {
        try await withChaosWorld(redisDatabase: 7) { world in
            let (workers, push, gateway) = try await startRoles(world)
            let traffic = try await ChaosTraffic(world: world, gateways: [gateway.port])
            let running = Task { await traffic.run() }
            defer { traffic.stop() }
            let rebuilds = ChaosMode.isFull ? 12 : 4
            var notes: [String] = []
            for index in 0..<rebuilds {
                try await traffic.awaitAccepted(ChaosMode.rate * 3)
                let started = ContinuousClock.now
                let (status, output) = try await world.command(["rebuild"])
                notes.append("rebuild \(index + 1): exit \(status) in \(ContinuousClock.now - started), \(output.split(separator: "\n").last ?? "")")
                #expect(status == 0, "rebuild failed: \(output)")
            }
            traffic.stop()
            await running.value
            let outcome = try await ChaosRecount(world: world, traffic: traffic).settle(pushPort: push.port)
            ChaosSummary(name: "rebuild-under-traffic", faults: rebuilds, notes: notes).report(outcome, traffic: traffic)
            _ = workers
        }
    }

    // MARK: 6. SIGTERM to each role

    /// Two of each role; under load each role gets SIGTERM once (a gateway, a worker, a push gateway with an SSE and
    /// a WebSocket client on it) and is replaced. Every 202 must be counted, every request sent must be answered,
    /// each process must exit 0 within the bound, and the stream clients must see a clean end and resume on the
    /// other push gateway with a snapshot.
    @Test func sigtermToEachRoleUnderLoad() async throws {
        let bound: Duration = .seconds(15)
        try await withChaosWorld(redisDatabase: 6) { world in
            let workers = ChaosRoles()
            for _ in 0..<2 { workers.append(try await world.start("worker", acceptsSIGTERM: true)) }
            let pushes = ChaosRoles()
            for _ in 0..<2 { pushes.append(try await world.start("push", acceptsSIGTERM: true)) }
            let gateways = ChaosRoles()
            for _ in 0..<2 { gateways.append(try await world.gateway(acceptsSIGTERM: true)) }
            try await ScorePathTests().waitUntilReady(port: pushes.at(1).port)
            let traffic = try await ChaosTraffic(world: world, gateways: gateways.all.map(\.port))
            let running = Task { await traffic.run() }
            defer { traffic.stop() }
            var notes: [String] = []

            // A role that does not exit within the bound is recorded as a failure and killed, so that the rest of
            // the scenario (clients, recount) still reports.
            func terminate(_ role: RoleProcess) async {
                let started = ContinuousClock.now
                do {
                    let status = try await role.terminate(within: bound)
                    notes.append("\(role.role) :\(role.port) exited \(status) \(ContinuousClock.now - started) after SIGTERM")
                    #expect(status == 0, "\(role.role) exited \(status) after SIGTERM")
                } catch {
                    notes.append("\(role.role) :\(role.port) still running \(bound) after SIGTERM: killed")
                    Issue.record("\(role.role) did not exit within \(bound) of SIGTERM")
                    role.kill()
                }
            }

            // The gateway: taken out of the lanes' list as it gets SIGTERM (a load balancer would do the same);
            // requests already on its connections must still be answered.
            try await traffic.awaitAccepted(ChaosMode.rate * 3)
            let oldGateway = gateways.at(0)
            traffic.gatewayPorts.withLock { $0.removeAll { $0 == oldGateway.port } }
            let sigterm = ContinuousClock.now
            await terminate(oldGateway)
            let newGateway = try await world.gateway(acceptsSIGTERM: true)
            gateways.replace(at: 0, with: newGateway)
            traffic.gatewayPorts.withLock { $0.append(newGateway.port) }

            // A worker.
            try await traffic.awaitAccepted(ChaosMode.rate * 2)
            await terminate(workers.at(0))
            workers.replace(at: 0, with: try await world.start("worker", acceptsSIGTERM: true))

            // A push gateway with an SSE and a WebSocket client following the all-time global board.
            let stream = BoardStream(window: .allTime, dimension: .global, value: nil)
            let victim = pushes.at(0)
            let sse = StreamEnd(), webSocket = StreamEnd()
            let sseClient = Task { await sse.follow { try await followSSE(port: victim.port, stream: stream, view: sse.view) } }
            let webSocketClient = Task { await webSocket.follow { try await followWebSocket(port: victim.port, stream: stream, view: webSocket.view) } }
            try await within(.seconds(30)) {
                while !(sse.view.hasSnapshot && webSocket.view.hasSnapshot && sse.view.updateCount > 0) { try await Task.sleep(for: .milliseconds(50)) }
            }
            await terminate(victim)
            // The clients must see the end by themselves (a close, not a hang).
            try await within(.seconds(10)) {
                await sseClient.value
                await webSocketClient.value
            }
            #expect(sse.ending == "clean end", "SSE client: \(sse.ending ?? "still open")")
            #expect(webSocket.ending == "clean end", "WebSocket client: \(webSocket.ending ?? "still open")")
            notes.append("SSE client: \(sse.ending ?? "-"), WebSocket client: \(webSocket.ending ?? "-")")
            // ... and resume on the other push gateway, with a fresh snapshot.
            let resumed = BoardView(period: "all")
            let resuming = Task { try await followWebSocket(port: pushes.at(1).port, stream: stream, view: resumed) }
            try await within(.seconds(30)) { while !resumed.hasSnapshot { try await Task.sleep(for: .milliseconds(50)) } }
            resuming.cancel()
            pushes.replace(at: 0, with: try await world.start("push", acceptsSIGTERM: true))

            traffic.stop()
            await running.value
            // Every request sent to the gateway before its SIGTERM got an answer. A request written after it onto a
            // keep-alive connection that the draining server closes as idle can race with the close (HTTP/1.1 lets a
            // client retry it; the generator does, with the same key): reported, not a failure.
            let toOldGateway = traffic.exchanges.filter { $0.port == oldGateway.port && $0.status == nil }
            let inFlight = toOldGateway.filter { $0.sentAt < sigterm }
            notes.append(
                "gateway requests without an answer: \(inFlight.count) sent before SIGTERM, \(toOldGateway.count - inFlight.count) sent after it"
                    + " (idle keep-alive connections closed by the drain; retried) \(toOldGateway.map { $0.error ?? "" })")
            #expect(inFlight.isEmpty, "requests in flight at SIGTERM not completed: \(inFlight.prefix(5).map(\.summary))")
            let otherUnanswered = traffic.exchanges.filter { $0.port != oldGateway.port && $0.status == nil }
            #expect(otherUnanswered.isEmpty, "requests to gateways that were not stopped went unanswered: \(otherUnanswered.prefix(5).map(\.summary))")
            let outcome = try await ChaosRecount(world: world, traffic: traffic).settle(pushPort: pushes.at(1).port)
            ChaosSummary(name: "sigterm-each-role", faults: 3, notes: notes).report(outcome, traffic: traffic)
        }
    }

    // MARK: 2. Redis killed and restarted

    /// A private Redis with the local stack's durability (append-only, fsync always) is killed with SIGKILL mid-run
    /// and restarted on the same folder. While it is down the gateway answers 503 (never 500, never 202) and every
    /// role stays up; afterwards the boards are exact, a retry of an accepted key is not counted twice, and a spent
    /// action token is refused.
    @Test func redisKilledAndRestarted() async throws {
        let redis = try await PrivateRedis()
        try await withChaosWorld(redisDatabase: 5, redis: redis) { world in
            let (workers, push, gateway) = try await startRoles(world)
            let traffic = try await ChaosTraffic(world: world, gateways: [gateway.port])
            let running = Task { await traffic.run() }
            defer { traffic.stop() }
            try await traffic.awaitAccepted(ChaosMode.rate * 4)
            var notes: [String] = []

            redis.kill()
            let down = ContinuousClock.now
            // Hold the outage for a few seconds and until the generator has been answered at least 20 times.
            let restarting = try await holdOutage(since: down, for: ChaosMode.isFull ? .seconds(30) : .seconds(6), answers: 20, traffic: traffic)
            let alive = liveness(workers: workers, push: push, gateway: gateway)
            try await redis.start()
            let during = traffic.exchanges(sentAfter: down, answeredBefore: restarting).filter { $0.kind != .token }
            notes.append("answers while Redis was down: \(histogram(during))")
            #expect(during.allSatisfy { $0.status == 503 && $0.problemType != nil && $0.hasRetryAfter },
                    "while Redis was down the gateway answered: \(histogram(during)), e.g. \(during.filter { $0.status != 503 }.prefix(3).map(\.summary))")
            #expect(during.allSatisfy { $0.accepted == 0 }, "a 202 while Redis was down")
            for (name, running) in alive {
                #expect(running, "\(name) exited while Redis was down")
                if !running { notes.append("\(name) exited while Redis was down") }
            }

            // The promises made before the kill, right after the restart (an action token lives 60 s): a retry of an
            // accepted key gets the same answer, and the token it spent is refused. A 503 while the gateway
            // reconnects is retried for up to 10 s, as a client would.
            // A key answered in the last instants before the kill may not have had its answer stored yet (the 202
            // goes out on the broker's ack; the answer is stored just after): its retry is told 409 "in progress"
            // until the claim expires, then admitted again with the same event id, which the workers deduplicate.
            // The promise checked here is for keys whose answer had time to be stored: two seconds before the kill.
            let spent = try #require(traffic.accepted.filter { $0.item.bearer != nil && $0.answeredAt < down - .seconds(2) }.max { $0.answeredAt < $1.answeredAt })
            try await HTTPConnection.with(port: gateway.port) { connection in
                func post(_ body: [String: String]) async throws -> HTTPAnswer {
                    let deadline = ContinuousClock.now + .seconds(10)
                    while true {
                        let answer = try await connection.postJSON("/v1/scores", token: spent.item.bearer, json: body)
                        if answer.status != 503 || ContinuousClock.now > deadline { return answer }
                        try await Task.sleep(for: .milliseconds(200))
                    }
                }
                let body = ["action": spent.item.action, "actionToken": spent.item.actionToken!, "idempotencyKey": spent.item.idempotencyKey]
                let repeated = try await post(body)
                #expect(repeated.status == 202 && repeated.json["eventId"] as? String == spent.eventID,
                        "a retry of a key accepted before the restart: \(repeated.status) \(String(decoding: repeated.body, as: UTF8.self))")
                var replay = body
                replay["idempotencyKey"] = UUID().uuidString.lowercased()
                let replayed = try await post(replay)
                #expect(replayed.status == 409 && replayed.problemType == "action-token-replayed",
                        "a token spent before the restart, used again: \(replayed.status) \(replayed.problemType ?? "")")
                notes.append(
                    "after the restart: retry of an accepted key → \(repeated.status) \(repeated.problemType ?? ""), its spent token (issued \(ContinuousClock.now - spent.answeredAt) ago) with a new key → \(replayed.status) \(replayed.problemType ?? "")")
            }

            // Traffic after the restart.
            do {
                try await traffic.awaitAccepted(ChaosMode.rate * 3, within: .seconds(60))
            } catch {
                Issue.record("fewer than \(ChaosMode.rate * 3) scores accepted within 60 s of Redis's restart: \(histogram(traffic.exchanges(sentAfter: restarting, answeredBefore: .now)))")
            }
            traffic.stop()
            await running.value
            let outcome = try await ChaosRecount(world: world, traffic: traffic).settle(pushPort: push.port)
            ChaosSummary(name: "redis-restart", faults: 1, notes: notes).report(outcome, traffic: traffic)
        }
    }

    // MARK: 4. PostgreSQL restarted

    /// A private PostgreSQL is stopped in immediate mode a few times (back within 2 s) and once for longer (quick:
    /// 20 s, full: 120 s). While it is down the workers must say not ready on /health/ready and stay up; they must
    /// resume by themselves, and the boards come out exact.
    @Test func postgresRestartedInImmediateMode() async throws {
        try await withPrivatePostgres { postgres in
            try await withChaosWorld(redisDatabase: 4, postgres: postgres) { world in
                let (workers, push, gateway) = try await startRoles(world)
                for worker in workers.all { try await ScorePathTests().waitUntilReady(port: worker.port) }
                let traffic = try await ChaosTraffic(world: world, gateways: [gateway.port])
                let running = Task { await traffic.run() }
                defer { traffic.stop() }
                var notes: [String] = []
                let outages: [Duration] = [.seconds(2), .seconds(2), ChaosMode.isFull ? .seconds(120) : .seconds(20)]
                for (index, outage) in outages.enumerated() {
                    try await traffic.awaitAccepted(ChaosMode.rate * 3, within: .seconds(120))
                    try await postgres.stopImmediately()
                    let down = ContinuousClock.now
                    // While it is down, each worker (polled side by side) should say not ready. For the long
                    // outage that is required within 15 s (under traffic a worker writes all the time, so it must
                    // have met the outage by then); for the 2 s restarts what was seen is reported.
                    let isLong = outage > .seconds(5)
                    let noticing = workers.all.map { worker in
                        Task { await readiness(of: worker, becomes: { $0 != 200 }, within: isLong ? .seconds(15) : outage) }
                    }
                    var noticed: [String] = []
                    for (number, task) in noticing.enumerated() {
                        let status = await task.value
                        noticed.append("worker \(number + 1): \(status.map(String.init) ?? "no answer")")
                        if isLong {
                            #expect(status != nil && status != 200, "outage \(index + 1) (\(outage)): worker \(number + 1) still said \(status.map(String.init) ?? "nothing") on /health/ready 15 s into the PostgreSQL outage")
                        }
                    }
                    let remaining = outage - (ContinuousClock.now - down)
                    if remaining > .zero { try await Task.sleep(for: remaining) }
                    for (number, worker) in workers.all.enumerated() where !worker.isRunning {
                        notes.append("outage \(index + 1): worker \(number + 1) exited while PostgreSQL was down")
                        Issue.record("outage \(index + 1) (\(outage)): worker \(number + 1) exited while PostgreSQL was down")
                    }
                    try await postgres.start()
                    let recovering = workers.all.filter(\.isRunning).map { worker in
                        Task { await readiness(of: worker, becomes: { $0 == 200 }, within: .seconds(60)) }
                    }
                    var back: [String] = []
                    for (number, task) in recovering.enumerated() {
                        let status = await task.value
                        back.append("worker \(number + 1): \(status.map(String.init) ?? "no answer")")
                        #expect(status == 200, "outage \(index + 1): worker \(number + 1) not ready 60 s after PostgreSQL came back")
                    }
                    notes.append("outage \(index + 1) (\(outage)): /health/ready while down \(noticed), after \(back)")
                }
                try await traffic.awaitAccepted(ChaosMode.rate * 3, within: .seconds(120))
                traffic.stop()
                await running.value
                let outcome = try await ChaosRecount(world: world, traffic: traffic).settle(pushPort: push.port)
                ChaosSummary(name: "postgres-restart", faults: outages.count, notes: notes).report(outcome, traffic: traffic)
            }
        }
    }

    // MARK: 5. Broker killed and restarted

    /// A private Tansu is killed with SIGKILL mid-run. While it is down the gateway answers 503 within about a second
    /// and never 202. It comes back empty (its log lives in memory); `topics apply` recreates the topics, and every
    /// score accepted after that must be counted exactly. Scores acknowledged before the kill that no worker had read
    /// are gone with the log: reported on their own, not as lost.
    ///
    /// It failed in full runs until two causes were fixed (docs/reliability.md): workers that rejoined the restarted
    /// broker's group before `topics apply` stayed with an empty assignment for good (now they rejoin when the topic
    /// comes back, WorkerBrokerRestartTests), and a worker whose producer id the new broker handed to another producer
    /// got PRODUCER_FENCED on every batch (now the producer replaces its instance).
    @Test func brokerKilledAndRestartedEmpty() async throws {
        let broker = try await PrivateBroker()
        try await withChaosWorld(redisDatabase: 3, kafkaBrokers: broker.address) { world in
            let (workers, push, gateway) = try await startRoles(world)
            let traffic = try await ChaosTraffic(world: world, gateways: [gateway.port])
            let running = Task { await traffic.run() }
            defer { traffic.stop() }
            try await traffic.awaitAccepted(ChaosMode.rate * 4)
            var notes: [String] = []

            broker.kill()
            let down = ContinuousClock.now
            let restarting = try await holdOutage(since: down, for: ChaosMode.isFull ? .seconds(30) : .seconds(5), answers: 10, traffic: traffic)
            let alive = liveness(workers: workers, push: push, gateway: gateway)
            let during = traffic.exchanges(sentAfter: down, answeredBefore: restarting).filter { $0.kind != .token }
            let slowest = during.map { $0.answeredAt - $0.sentAt }.max() ?? .zero
            notes.append("answers while the broker was down: \(histogram(during)), slowest \(slowest)")
            // No new acceptance. A repeated key that was answered before gets its stored 202 again (no broker
            // needed), and a retry of a key whose first publish is still unsettled gets 409 idempotency-key-in-use:
            // both are right. Everything else must be 503 with Retry-After.
            let fresh = during.filter { $0.acceptsKeysFirstSent(since: down) }
            #expect(fresh.isEmpty, "new scores accepted while the broker was down: \(fresh.prefix(3).map(\.summary))")
            let wrong = during.filter { !$0.isOutageAnswer(since: down) }
            #expect(wrong.isEmpty, "answers while the broker was down that are not 503: \(wrong.prefix(5).map(\.summary))")
            // "Within 1 s": the gateway's publish deadline is 1 s; 0.5 s more for a loaded 2-core machine.
            #expect(slowest < .milliseconds(1500), "a 503 took \(slowest) while the broker was down")
            for (name, running) in alive where !running {
                notes.append("\(name) exited while the broker was down")
                Issue.record("\(name) exited while the broker was down")
            }

            try await broker.start()
            let (status, output) = try await world.command(["topics", "apply"])
            #expect(status == 0, "topics apply: \(output)")
            notes.append("topics apply after the restart: exit \(status): \(output.split(separator: "\n").joined(separator: "; "))")
            let up = ContinuousClock.now
            do {
                try await traffic.awaitAccepted(ChaosMode.rate * 5, within: .seconds(60))
            } catch {
                Issue.record("the gateway accepted fewer than \(ChaosMode.rate * 5) scores within 60 s of the broker's restart: \(histogram(traffic.exchanges(sentAfter: up, answeredBefore: .now)))")
            }
            traffic.stop()
            await running.value
            notes.append("accepted after the restart: \(traffic.accepted.filter { $0.answeredAt >= up }.count)")
            // What the old broker may have acknowledged: answered before the restart, or first sent before the kill
            // (on a loaded machine a client can miss its answer, and its retry gets the stored 202 only after the
            // restart). If no worker had consumed it, it is gone with the old log.
            let acceptedBefore = traffic.accepted.filter { $0.answeredAt < up || $0.item.createdAt < down }
            var recount = ChaosRecount(world: world, traffic: traffic)
            recount.excusableIfUnapplied = Set(acceptedBefore.map(\.eventID))
            let outcome = try await recount.settle(pushPort: push.port)
            if outcome.lost > 0 { notes += await workerStates(workers) }
            ChaosSummary(name: "broker-restart", faults: 1, notes: notes).report(outcome, traffic: traffic)
        }
    }

    // MARK: 7. schemathesis

    /// schemathesis (PyPI) generates requests from openapi.yaml against separate gateway, push and worker processes,
    /// with `--checks all`, once per token role: no 5xx, every error problem+json, server and spec agree. The
    /// streaming operations (SSE, WebSocket) are left out: a valid stream never ends, which is not a failure.
    @Test func schemathesisFindsNothing() async throws {
        try await withChaosWorld(redisDatabase: 2) { world in
            let worker = try await world.start("worker")
            let push = try await world.start("push")
            let gateway = try await world.gateway()
            try await ScorePathTests().waitUntilReady(port: push.port)
            let examples = ChaosMode.isFull ? "200" : "25"
            let player = try await world.base.token("st-player-\(world.tag)", region: "r0", guild: "g0")
            let server = try await world.base.token("st-server-\(world.tag)", role: .gameServer)
            let admin = try await world.base.token("st-admin-\(world.tag)", role: .admin)
            let runs: [(name: String, port: Int, tags: [String], token: String?)] = [
                ("gateway as player", gateway.port, ["ingest", "operations"], player),
                ("gateway as game server", gateway.port, ["ingest"], server),
                ("gateway as admin", gateway.port, ["admin"], admin),
                ("push anonymous", push.port, ["query", "operations"], nil),
                ("push as player", push.port, ["query"], player),
                ("push as admin", push.port, ["review"], admin),
                ("worker", worker.port, ["operations"], nil),
            ]
            var failed: [String] = []
            for run in runs {
                var arguments = [Repository.root.appendingPathComponent("scripts/chaos/schemathesis.sh").path, "run", "http://127.0.0.1:\(run.port)", examples]
                for tag in run.tags { arguments += ["--include-tag", tag] }
                if let token = run.token { arguments += ["-H", "Authorization: Bearer \(token)"] }
                let started = ContinuousClock.now
                let (status, output) = try await runCommand("/bin/bash", arguments)
                let summary = output.split(separator: "\n").suffix(3).joined(separator: " | ")
                print("  schemathesis \(run.name): exit \(status) in \(ContinuousClock.now - started): \(summary)")
                if status != 0 {
                    failed.append(run.name)
                    print("----- schemathesis \(run.name) -----\n\(output)\n-----")
                }
            }
            print("chaos schemathesis: runs = \(runs.count), failed = \(failed.count) \(failed) [\(ChaosMode.name) mode, \(examples) examples per operation]")
            #expect(failed.isEmpty, "schemathesis found failures in: \(failed) (the output is printed above)")
        }
    }
}
}

// MARK: - Helpers

/// Runs `body` with a fresh ``ChaosWorld`` and tears it down afterwards, also when `body` throws.
func withChaosWorld(
    redisDatabase: Int, kafkaBrokers: String? = nil, redis: PrivateRedis? = nil, postgres: PrivatePostgres? = nil,
    _ body: (ChaosWorld) async throws -> Void
) async throws {
    try await using(try await ChaosWorld(redisDatabase: redisDatabase, kafkaBrokers: kafkaBrokers, redis: redis, postgres: postgres), body)
}

/// The roles most scenarios run: two workers in the group, a push gateway (ready) and a gateway.
func startRoles(_ world: ChaosWorld) async throws -> (workers: ChaosRoles, push: RoleProcess, gateway: RoleProcess) {
    let workers = ChaosRoles()
    for _ in 0..<2 { workers.append(try await world.start("worker")) }
    let push = try await world.start("push")
    let gateway = try await world.gateway()
    try await ScorePath.ScorePathTests().waitUntilReady(port: push.port)
    return (workers, push, gateway)
}

/// Keeps a dependency down for `duration` (the fault's schedule) and until the generator was answered `answers`
/// times since `down`; returns when that was.
func holdOutage(since down: ContinuousClock.Instant, for duration: Duration, answers: Int, traffic: ChaosTraffic) async throws -> ContinuousClock.Instant {
    let remaining = duration - (ContinuousClock.now - down)
    if remaining > .zero { try await Task.sleep(for: remaining) }
    try await within(.seconds(60)) {
        while traffic.exchanges(sentAfter: down, answeredBefore: .now).count < answers { try await Task.sleep(for: .milliseconds(50)) }
    }
    return .now
}

/// Which of the scenario's role processes are still running.
func liveness(workers: ChaosRoles, push: RoleProcess, gateway: RoleProcess) -> [(String, Bool)] {
    workers.all.enumerated().map { ("worker \($0.offset + 1)", $0.element.isRunning) } + [("push", push.isRunning), ("gateway", gateway.isRunning)]
}

/// What each worker says of itself (`/health/ready`, and its lag and failure lines from `/metrics`): the evidence
/// for a scenario whose workers did not catch up.
func workerStates(_ workers: ChaosRoles) async -> [String] {
    var states: [String] = []
    for (index, worker) in workers.all.enumerated() {
        let answers = try? await within(.seconds(5)) {
            try await HTTPConnection.with(port: worker.port) { connection in
                (try await connection.send(.GET, "/health/ready"), try await connection.send(.GET, "/metrics"))
            }
        }
        guard let (ready, metrics) = answers else {
            states.append("worker \(index + 1): no answer (running: \(worker.isRunning))")
            continue
        }
        let interesting = String(decoding: metrics.body, as: UTF8.self).split(separator: "\n")
            .filter { !$0.hasPrefix("#") && ($0.contains("lag") || $0.contains("failures") || $0.contains("fenced") || $0.contains("events_total")) }
        states.append("worker \(index + 1): ready \(ready.status) \(String(decoding: ready.body, as: UTF8.self)); \(interesting.joined(separator: "; "))")
    }
    return states
}

/// Polls a role's `/health/ready` until `condition` holds for its status, or `limit` passed; returns the last status
/// (`nil`: no answer).
func readiness(of role: RoleProcess, becomes condition: (Int) -> Bool, within limit: Duration) async -> Int? {
    let deadline = ContinuousClock.now + limit
    var last: Int?
    while ContinuousClock.now < deadline {
        last = try? await within(.seconds(5)) { try await HTTPConnection.with(port: role.port) { try await $0.send(.GET, "/health/ready").status } }
        if let last, condition(last) { return last }
        try? await Task.sleep(for: .milliseconds(200))
    }
    return last
}

/// `503 ×40, 500 ×2, no answer ×1` (with the problem type when there is one).
func histogram(_ exchanges: [ChaosTraffic.Exchange]) -> String {
    let counts = Dictionary(grouping: exchanges) { ($0.status.map(String.init) ?? "no answer") + ($0.problemType.map { " \($0)" } ?? "") }.mapValues(\.count)
    return counts.isEmpty ? "none" : counts.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }.joined(separator: ", ")
}

/// A stream client that records how its stream ended.
final class StreamEnd: Sendable {
    let view = BoardView(period: "all")
    private let end = Mutex<String?>(nil)
    var ending: String? { end.withLock { $0 } }

    func follow(_ body: @Sendable () async throws -> Void) async {
        do {
            try await body()
            end.withLock { $0 = "clean end" }
        } catch {
            end.withLock { $0 = "error: \(error)" }
        }
    }
}

/// The processes of one role in a scenario, any of which may be replaced after a kill or a SIGTERM.
final class ChaosRoles: Sendable {
    private let items = Mutex<[RoleProcess]>([])
    func append(_ process: RoleProcess) { items.withLock { $0.append(process) } }
    func at(_ index: Int) -> RoleProcess { items.withLock { $0[index] } }
    func replace(at index: Int, with process: RoleProcess) { items.withLock { $0[index] = process } }
    func kill(at index: Int) { at(index).kill() }
    var all: [RoleProcess] { items.withLock { $0 } }
}


extension ChaosTraffic.Exchange {
    /// An answer the gateway may give while a dependency it needs is down since `down`: 503 with Retry-After; 409
    /// idempotency-key-in-use (a retry whose first attempt is still unsettled); a 202 that accepts no key first sent
    /// since `down` (a repeated key's stored answer, or the first answer the client sees for a key published before
    /// the fault: ``Exchange/acceptsKeysFirstSent(since:)``); for a batch, 200 whose items are each one of those.
    func isOutageAnswer(since down: ContinuousClock.Instant) -> Bool {
        switch (status, problemType) {
        case (503, _): return hasRetryAfter
        case (409, "idempotency-key-in-use"): return true
        // Limits are decided before anything is published, with no broker: a player over the catalog's limit is
        // refused as ever (and nothing is accepted).
        case (429, "rate-limited"): return hasRetryAfter
        case (202, _) where kind == .score: return !acceptsKeysFirstSent(since: down)
        case (200, _) where kind == .batch:
            return !acceptsKeysFirstSent(since: down) && zip(itemStatuses, itemProblemTypes).allSatisfy { status, type in
                status == 503 || status == 202 || (status == 409 && type == "idempotency-key-in-use") || (status == 429 && type == "rate-limited")
            }
        default: return false
        }
    }
}
