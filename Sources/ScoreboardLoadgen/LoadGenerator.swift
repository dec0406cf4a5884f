import Foundation
import Histogram
import NIOCore
import NIOHTTP1

/// Sends generated score traffic open loop (each request on its schedule, latency measured from that intended time,
/// so a slow server cannot slow the generator down and hide its own queueing) and measures, with subscribers, how
/// long an accepted event takes to reach a stream.
public struct LoadGenerator: Sendable {
    /// A bearer token for a player (`LoadUser`) or, with `nil`, for the game server that sends batches.
    public typealias Tokens = @Sendable (LoadUser?) async throws -> String

    public let configuration: LoadConfiguration
    let tokens: Tokens

    public init(configuration: LoadConfiguration, tokens: @escaping Tokens) {
        self.configuration = configuration
        self.tokens = tokens
    }

    /// One scheduled request: its place in the schedule and the players (and actions) it carries.
    struct Operation: Sendable {
        var intended: ContinuousClock.Instant
        var events: [(user: Int, action: String)]
    }

    struct Run: Sendable {
        /// Built once: the table of a large distribution is big.
        let users: ZipfDistribution
        let counters = LoadCounters()
        let latency = LatencyRecorder()
        let service = LatencyRecorder()
        let endToEnd = LatencyRecorder()
        let ledger = AcceptedLedger()
        let queue = WorkQueue<Operation>()
    }

    /// Runs the load; `progress` is called about once a second.
    public func run(progress: @escaping @Sendable (LoadProgress) -> Void = { _ in }) async throws -> LoadReport {
        let configuration = self.configuration
        guard configuration.rate >= 0, configuration.duration > .zero, !configuration.actions.isEmpty else {
            throw LoadError("the rate must not be negative, the duration must be positive and the catalog must have actions")
        }
        if configuration.path.isQuery, configuration.push == nil { throw LoadError("queries need the push gateway's address") }
        let run = Run(users: ZipfDistribution(count: configuration.users, exponent: configuration.zipfExponent))
        let userTokens = try await playerTokens()
        let serverToken = configuration.path == .batch ? try await tokens(nil) : ""
        let subscribers = (0..<configuration.subscribers).map { _ in SubscriberProgress(ledger: run.ledger, latency: run.endToEnd) }

        return try await withThrowingTaskGroup(of: Void.self) { group in
            // Subscribers first, and traffic only once each is connected: an update before the stream opens is lost.
            if let push = configuration.push {
                for subscriber in subscribers {
                    group.addTask {
                        try await SubscriberStream.follow(
                            target: push, board: configuration.board, transport: configuration.subscriberTransport, progress: subscriber)
                    }
                }
            } else if !subscribers.isEmpty {
                throw LoadError("subscribers need the push gateway's address")
            }
            let connectDeadline = ContinuousClock.now + .seconds(10)
            while !subscribers.allSatisfy(\.isConnected) {
                guard ContinuousClock.now < connectDeadline else {
                    let connected = subscribers.filter(\.isConnected).count
                    let why = subscribers.compactMap(\.failure).first.map { ": \($0)" } ?? ""
                    throw LoadError("\(connected) of \(subscribers.count) subscribers connected within 10 s\(why)")
                }
                try await Task.sleep(for: .milliseconds(20))
            }

            let start = ContinuousClock.now
            group.addTask {
                var last = (at: start, accepted: 0)
                while !Task.isCancelled {
                    try await Task.sleep(for: .seconds(1))
                    let now = ContinuousClock.now
                    let counters = run.counters.snapshot
                    progress(LoadProgress(
                        elapsed: now - start, scheduled: counters.scheduled, completed: counters.completed, accepted: counters.accepted,
                        acceptedPerSecond: Double(counters.accepted - last.accepted) / (now - last.at).seconds, queued: run.queue.count,
                        errors: counters.transportErrors + counters.statuses.filter { $0.key >= 400 }.map(\.value).reduce(0, +),
                        latencyP99: run.latency.snapshot.valueAtPercentile(99), endToEndP99: run.endToEnd.snapshot.valueAtPercentile(99)))
                    last = (now, counters.accepted)
                }
            }
            try await withThrowingTaskGroup(of: Void.self) { senders in
                for connection in 0..<max(1, configuration.connections) {
                    senders.addTask {
                        await self.sendLoop(run: run, userTokens: userTokens, serverToken: serverToken, closedLoop: configuration.rate == 0
                            ? ClosedLoop(end: start + configuration.duration, seed: configuration.seed &+ UInt64(connection) &* 0x9E37_79B9) : nil)
                    }
                }
                if configuration.rate > 0 { try await schedule(run: run, start: start) }
                try await senders.waitForAll()
            }
            let sendEnd = ContinuousClock.now

            // Wait until every subscriber has seen every accepted event, or the drain time is up.
            let drainDeadline = ContinuousClock.now + configuration.drain
            while !subscribers.isEmpty {
                subscribers.forEach { $0.catchUp() }
                if subscribers.allSatisfy({ $0.unseen == 0 }) || ContinuousClock.now >= drainDeadline { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            group.cancelAll()
            let counters = run.counters.snapshot
            return LoadReport(
                configuration: LoadReport.Settings(configuration), sendSeconds: (sendEnd - start).seconds, counters: counters,
                latency: .init(run.latency.snapshot), service: .init(run.service.snapshot),
                endToEnd: subscribers.isEmpty ? nil : .init(run.endToEnd.snapshot),
                unseenBySubscribers: subscribers.map(\.unseen), updatesPerSubscriber: subscribers.map(\.updates))
        }
    }

    /// Puts each operation on the queue at its intended time until the duration is over.
    func schedule(run: Run, start: ContinuousClock.Instant) async throws {
        // Senders stop when the queue is finished, also when the schedule is cancelled.
        defer { run.queue.finish() }
        let configuration = self.configuration
        let interval = Duration.seconds(1 / configuration.operationsPerSecond)
        let end = start + configuration.duration
        let users = run.users
        var random = SeededGenerator(seed: configuration.seed)
        var index = 0
        while true {
            let intended = start + interval * index
            guard intended < end else { break }
            if intended > ContinuousClock.now { try await Task.sleep(until: intended, tolerance: .microseconds(200)) }
            // Behind schedule, every operation that is due goes out now, each keeping its own intended time.
            let now = ContinuousClock.now
            while start + interval * index <= now, start + interval * index < end {
                run.queue.put(makeOperation(intended: start + interval * index, users: users, random: &random))
                run.counters.update { $0.scheduled += 1 }
                index += 1
            }
        }
    }

    /// The events of one operation (a batch's many, a player's or a query's one).
    func makeOperation(intended: ContinuousClock.Instant, users: ZipfDistribution, random: inout SeededGenerator) -> Operation {
        let count = configuration.path == .batch ? configuration.batchSize : 1
        return Operation(intended: intended, events: (0..<count).map { _ in
            (user: users.sample(using: &random), action: configuration.actions.randomElement(using: &random)!)
        })
    }

    /// A connection of the closed loop makes its own operations until `end`.
    struct ClosedLoop: Sendable {
        var end: ContinuousClock.Instant
        var seed: UInt64
    }

    /// One connection: takes operations until the queue is finished (or, closed loop, makes them until the end);
    /// reconnects after a transport error.
    func sendLoop(run: Run, userTokens: [String], serverToken: String, closedLoop: ClosedLoop?) async {
        var pending: Operation?
        let target = configuration.path.isQuery ? configuration.push! : configuration.gateway
        let users = run.users
        var random = SeededGenerator(seed: closedLoop?.seed ?? 0)
        while true {
            do {
                try await LoadHTTPConnection.with(host: target.host, port: target.port) { connection in
                    while true {
                        let operation: Operation
                        if let closedLoop {
                            let now = ContinuousClock.now
                            guard now < closedLoop.end else { break }
                            operation = makeOperation(intended: now, users: users, random: &random)
                            run.counters.update { $0.scheduled += 1 }
                        } else {
                            guard let next = await run.queue.take() else { break }
                            operation = next
                        }
                        pending = operation
                        try await perform(operation, on: &connection, run: run, userTokens: userTokens, serverToken: serverToken)
                        pending = nil
                    }
                }
                return
            } catch {
                run.counters.update {
                    $0.transportErrors += 1
                    $0.lastError = "\(error)"
                    if pending != nil { $0.completed += 1 }
                }
                if let operation = pending { run.latency.record(ContinuousClock.now - operation.intended) }
                pending = nil
                try? await Task.sleep(for: .milliseconds(50))
                if let closedLoop, ContinuousClock.now >= closedLoop.end { return }
            }
        }
    }

    func perform(
        _ operation: Operation, on connection: inout LoadHTTPConnection, run: Run, userTokens: [String], serverToken: String
    ) async throws {
        let started = ContinuousClock.now
        var statuses: [Int] = []
        var accepted: [(userID: String, points: Int64)] = []
        switch configuration.path {
        case .player:
            let event = operation.events[0]
            let user = configuration.user(event.user)
            let bearer = ("Authorization", "Bearer \(userTokens[event.user])")
            let tokenAnswer = try await connection.send(.POST, "/v1/actions/\(event.action)/token", headers: [bearer], body: nil)
            if tokenAnswer.status == 200 || tokenAnswer.status == 201, let token = Self.string("actionToken", in: tokenAnswer.body) {
                let body = Self.json(["action": event.action, "actionToken": token, "idempotencyKey": UUID().uuidString.lowercased()])
                let answer = try await connection.send(.POST, "/v1/scores", headers: [bearer, ("Content-Type", "application/json")], body: body)
                statuses.append(answer.status)
                if answer.status == 202, let points = Self.integer("points", in: answer.body) { accepted.append((user.id, points)) }
            } else {
                statuses.append(tokenAnswer.status)
            }
        case .top, .around, .standing:
            let event = operation.events[0]
            let userID = configuration.user(event.user).id
            let path = switch configuration.path {
            case .top: "/v1/leaderboards/\(configuration.board)?limit=10"
            case .around: "/v1/leaderboards/\(configuration.board)/around/\(userID)?radius=5"
            default: "/v1/users/\(userID)/standing"
            }
            let answer = try await connection.send(.GET, path, headers: [], body: nil)
            statuses.append(answer.status)
        case .batch:
            let events = operation.events.map { event -> [String: Any] in
                let user = configuration.user(event.user)
                return ["userId": user.id, "action": event.action, "idempotencyKey": UUID().uuidString.lowercased(), "region": user.region, "guild": user.guild]
            }
            let answer = try await connection.send(
                .POST, "/v1/events:batch", headers: [("Authorization", "Bearer \(serverToken)"), ("Content-Type", "application/json")],
                body: Self.json(["events": events]))
            if answer.status == 200, let results = (try? JSONSerialization.jsonObject(with: Data(answer.body.readableBytesView))) as? [String: Any],
               let items = results["results"] as? [[String: Any]] {
                for item in items {
                    let status = (item["status"] as? NSNumber)?.intValue ?? 0
                    statuses.append(status)
                    if status == 202, let score = item["accepted"] as? [String: Any], let userID = score["userId"] as? String,
                       let points = (score["points"] as? NSNumber)?.int64Value {
                        accepted.append((userID, points))
                    }
                }
            } else {
                statuses.append(contentsOf: Array(repeating: answer.status, count: operation.events.count))
            }
        }
        let finished = ContinuousClock.now
        if configuration.subscribers > 0 {
            for (userID, points) in accepted { run.ledger.accepted(userID: userID, points: points, at: finished) }
        }
        run.latency.record(finished - operation.intended)
        run.service.record(finished - started)
        run.counters.update { counters in
            counters.completed += 1
            counters.accepted += accepted.count
            for status in statuses { counters.statuses[status, default: 0] += 1 }
        }
    }

    /// Bearer tokens of every player, minted once before the clock starts (signing is not the server's work).
    func playerTokens() async throws -> [String] {
        guard configuration.path == .player else { return [] }
        var tokens: [String] = []
        tokens.reserveCapacity(configuration.users)
        for index in 0..<configuration.users { tokens.append(try await self.tokens(configuration.user(index))) }
        return tokens
    }

    static func json(_ object: Any) -> ByteBuffer {
        ByteBuffer(bytes: (try? JSONSerialization.data(withJSONObject: object)) ?? Data())
    }

    static func string(_ key: String, in body: ByteBuffer) -> String? {
        ((try? JSONSerialization.jsonObject(with: Data(body.readableBytesView))) as? [String: Any])?[key] as? String
    }

    static func integer(_ key: String, in body: ByteBuffer) -> Int64? {
        (((try? JSONSerialization.jsonObject(with: Data(body.readableBytesView))) as? [String: Any])?[key] as? NSNumber)?.int64Value
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
