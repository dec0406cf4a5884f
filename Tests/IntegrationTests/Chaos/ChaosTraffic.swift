import Foundation
import NIOHTTP1
import ScoreboardCore
import ScoreboardGateway
import Synchronization

/// The fault suite's steady traffic: game-server batches (`POST /v1/events:batch`) for thousands of members and
/// player scores with one-time action tokens, about 5% of them repeating an idempotency key that was already
/// answered. It records every answer with its time, and every accepted score by (user, idempotency key): the
/// recount's only input.
///
/// It behaves as a well-written client: an item answered 503 (or not answered at all) is retried later with the
/// same idempotency key until it gets a definitive answer, so a score the gateway published after telling the client
/// 503 ends up either answered 202 on a retry or listed as unresolved; either way the recount knows of it.
final class ChaosTraffic: Sendable {
    struct Member: Sendable, Hashable {
        var id: String
        var region: String
        var guild: String?
    }

    /// One score as the client sends it; a retry or a deliberate repeat sends the same again.
    struct Item: Sendable {
        var member: Member
        var action: String
        var idempotencyKey: String
        /// Player scores only: the bearer token and the one-time action token (game servers have neither).
        var bearer: String?
        var actionToken: String?
        /// When the generator made the item, just before its first send (its retries keep it).
        var createdAt = ContinuousClock.now
        var key: String { "\(member.id)\n\(idempotencyKey)" }
    }

    struct Accepted: Sendable {
        var item: Item
        var eventID: String
        var points: Int64
        var occurredAt: Int64
        var answeredAt: ContinuousClock.Instant
    }

    /// One HTTP exchange as the client saw it.
    struct Exchange: Sendable {
        enum Kind: String, Sendable { case batch, score, token }
        var kind: Kind
        var port: Int
        var sentAt: ContinuousClock.Instant
        var answeredAt: ContinuousClock.Instant
        /// `nil`: no answer (the connection failed or closed before the answer).
        var status: Int?
        var problemType: String?
        var isProblemJSON: Bool
        var hasRetryAfter: Bool
        /// Batch answers: the status of each item.
        var itemStatuses: [Int]
        var error: String?
        /// Batch answers: each item's problem type (`nil` for a 202).
        var itemProblemTypes: [String?] = []
        /// Items accepted for a key that had no 202 before (a repeated key answered again does not count).
        var newlyAccepted = 0
        /// When each of those keys was first sent.
        var newlyAcceptedFirstSent: [ContinuousClock.Instant] = []

        /// Whether this answer accepted a key first sent at or after `instant`. A key sent earlier may get its first
        /// 202 later without the broker: its publish was acknowledged, but the client never saw the answer (its 10 s
        /// deadline passed on a loaded machine), and its retry gets the stored 202.
        func acceptsKeysFirstSent(since instant: ContinuousClock.Instant) -> Bool {
            newlyAcceptedFirstSent.contains { $0 >= instant }
        }

        var accepted: Int { kind == .batch ? itemStatuses.filter { $0 == 202 }.count : (status == 202 ? 1 : 0) }
        var summary: String {
            "\(kind.rawValue) on :\(port) → \(status.map(String.init) ?? "no answer (\(error ?? "?"))")\(problemType.map { " \($0)" } ?? "")"
                + (itemStatuses.isEmpty ? "" : " items \(itemSummary)")
        }

        /// `202 ×3, 503 broker-unavailable ×37`.
        var itemSummary: String {
            let labels = zip(itemStatuses, itemProblemTypes + Array(repeating: nil, count: max(0, itemStatuses.count - itemProblemTypes.count)))
                .map { status, type in type.map { "\(status) \($0)" } ?? String(status) }
            return Dictionary(grouping: labels, by: { $0 }).mapValues(\.count).sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }
                .joined(separator: ", ")
        }
    }

    private struct State {
        var accepted: [String: Accepted] = [:]
        /// Items waiting for a definitive answer (a 503, a key still in use, no answer), by key.
        var retries: [String: Item] = [:]
        /// Accepted items that a lane may repeat on purpose.
        var repeatable: [Item] = []
        var exchanges: [Exchange] = []
        /// Answers that break the contract whatever the fault (500s, errors that are not problem+json, a repeated key
        /// answered with another event, points that are not the catalog's).
        var violations: [String] = []
        var refused: [String: Int] = [:]
        var retriesSent = 0
    }

    let regions = ["r0", "r1", "r2"]
    let guilds = ["g0", "g1", "g2", "g3", "g4"]
    let members: [Member]
    let players: [(member: Member, bearer: String)]
    let gameServerToken: String
    let points: [String: Int64]
    /// The gateways' ports: lanes spread over them and move on when one stops answering.
    let gatewayPorts: Mutex<[Int]>
    private let state = Mutex(State())
    private let stopFlag = Atomic<Bool>(false)
    private let scheduled = Atomic<Int>(0)
    private let playerScheduled = Atomic<Int>(0)
    private let memberCursor = Atomic<Int>(0)
    let startedAt = ContinuousClock.now
    let rate: Int

    /// - Parameters:
    ///   - rate: events per second the lanes aim at together.
    init(world: ChaosWorld, gateways: [Int], rate: Int = ChaosMode.rate, players playerCount: Int = 200) async throws {
        self.rate = rate
        // Enough members that the catalog's per-member limits (complete-quest 10 a minute) rarely refuse one: each
        // member gets an event every 8 s or so.
        let memberCount = max(1_000, rate * 8)
        var members: [Member] = []
        for index in 0..<memberCount {
            members.append(Member(id: "m\(index)-\(world.tag)", region: regions[index % 3], guild: index % 7 == 6 ? nil : guilds[index % 5]))
        }
        self.members = members
        var players: [(Member, String)] = []
        for index in 0..<playerCount {
            let member = Member(id: "p\(index)-\(world.tag)", region: regions[index % 3], guild: index % 7 == 6 ? nil : guilds[(index + 2) % 5])
            players.append((member, try await world.base.token(member.id, region: member.region, guild: member.guild, expiresIn: 7200)))
        }
        self.players = players
        gameServerToken = try await world.base.token("game-server-\(world.tag)", role: .gameServer, expiresIn: 7200)
        points = world.base.catalog.actions.actions.mapValues(\.points)
        gatewayPorts = Mutex(gateways)
    }

    // MARK: - Running

    /// Runs `batchLanes` batch lanes and `playerLanes` player lanes until ``stop()``; then retries what is still
    /// unresolved until everything has a definitive answer or `drainLimit` passed.
    func run(batchLanes: Int = 4, playerLanes: Int = 2, batchSize: Int = 40, drainLimit: Duration = .seconds(60)) async {
        await withTaskGroup(of: Void.self) { group in
            for lane in 0..<batchLanes { group.addTask { await self.batchLane(lane, size: batchSize) } }
            for lane in 0..<playerLanes { group.addTask { await self.playerLane(lane, lanes: playerLanes) } }
        }
        let deadline = ContinuousClock.now + drainLimit
        while ContinuousClock.now < deadline, !state.withLock({ $0.retries.isEmpty }) {
            await withTaskGroup(of: Void.self) { group in
                for lane in 0..<batchLanes { group.addTask { await self.batchLane(lane, size: batchSize, retriesUntil: deadline) } }
                group.addTask { await self.drainPlayerRetries() }
            }
            if !state.withLock({ $0.retries.isEmpty }) { try? await Task.sleep(for: .milliseconds(500)) }
        }
    }

    func stop() { stopFlag.store(true, ordering: .relaxed) }
    var isStopped: Bool { stopFlag.load(ordering: .relaxed) }

    /// Keeps sending until `events` were sent (or ``stop()``).
    func stop(afterSent events: Int) async throws {
        while scheduled.load(ordering: .relaxed) < events, !isStopped { try await Task.sleep(for: .milliseconds(100)) }
        stop()
    }

    /// Waits (with a deadline) until `count` more scores were accepted than when it was called.
    func awaitAccepted(_ count: Int, within limit: Duration = .seconds(60)) async throws {
        let target = acceptedCount + count
        try await within(limit) { while self.acceptedCount < target { try await Task.sleep(for: .milliseconds(50)) } }
    }

    private func port(_ lane: Int) -> Int? {
        gatewayPorts.withLock { $0.isEmpty ? nil : $0[lane % $0.count] }
    }

    /// Paces the lanes together: the n-th event goes out no earlier than n / rate seconds after the start.
    private func pace(_ events: Int) async {
        let slot = scheduled.add(events, ordering: .relaxed).oldValue
        let due = startedAt + .milliseconds(slot * 1000 / rate)
        if due > ContinuousClock.now { try? await Task.sleep(until: due) }
    }

    /// One player score for every 40 batch events: a steady trickle on the player path.
    private func pacePlayer() async {
        let slot = playerScheduled.add(1, ordering: .relaxed).oldValue
        let due = startedAt + .milliseconds(slot * 40 * 1000 / rate)
        if due > ContinuousClock.now { try? await Task.sleep(until: due) }
    }

    /// The action of a member's n-th event: first the once-a-day and the few-an-hour actions, then quests.
    private func action(round: Int) -> String {
        switch round {
        case 0: "daily-bonus"
        case 1...5: "pvp-win"
        case 6...10: "pvp-match"
        default: "complete-quest"
        }
    }

    /// Sends batches until ``stop()``; with `retriesUntil`, only the items waiting for a retry, until none is left
    /// or the deadline passed (each round of retries a fifth of a second apart).
    private func batchLane(_ lane: Int, size: Int, retriesUntil deadline: ContinuousClock.Instant? = nil) async {
        let retriesOnly = deadline != nil
        func goOn() -> Bool { deadline.map { ContinuousClock.now < $0 } ?? !isStopped }
        var generator = SystemRandomNumberGenerator()
        var failures = 0
        while goOn() {
            guard let port = port(lane + failures) else { return }
            do {
                try await DeadlineHTTPConnection.with(port: port) { connection in
                    while goOn() {
                        if retriesOnly { try await Task.sleep(for: .milliseconds(200)) }
                        var items = self.takeRetries(max: size / 2, gameServer: true)
                        if retriesOnly && items.isEmpty { return }
                        var keys = Set(items.map(\.key))
                        if !retriesOnly {
                            while items.count < size {
                                if Int.random(in: 0..<100, using: &generator) < 5,
                                   let repeated = self.state.withLock({ $0.repeatable.randomElement(using: &generator) }), repeated.bearer == nil,
                                   keys.insert(repeated.key).inserted {
                                    items.append(repeated)
                                    continue
                                }
                                let n = self.memberCursor.add(1, ordering: .relaxed).oldValue
                                let member = self.members[n % self.members.count]
                                let item = Item(member: member, action: self.action(round: n / self.members.count), idempotencyKey: UUID().uuidString.lowercased())
                                keys.insert(item.key)
                                items.append(item)
                            }
                            await self.pace(items.count)
                        }
                        try await self.sendBatch(items, port: port, connection: &connection)
                        failures = 0
                    }
                }
                if retriesOnly { return }
            } catch {
                // The gateway closed the connection or is gone: try the next one after a short backoff.
                failures += 1
                try? await Task.sleep(for: .milliseconds(min(50 * failures, 500)))
                if retriesOnly && failures > 20 { return }
            }
        }
    }

    private func takeRetries(max: Int, gameServer: Bool) -> [Item] {
        state.withLock { state in
            let keys = state.retries.filter { ($0.value.bearer == nil) == gameServer }.keys.prefix(max)
            let items = keys.compactMap { state.retries.removeValue(forKey: $0) }
            state.retriesSent += items.count
            return items
        }
    }

    private func sendBatch(_ items: [Item], port: Int, connection: inout DeadlineHTTPConnection) async throws {
        let events: [[String: String]] = items.map { item in
            var event = ["userId": item.member.id, "action": item.action, "idempotencyKey": item.idempotencyKey, "region": item.member.region]
            if let guild = item.member.guild { event["guild"] = guild }
            return event
        }
        let sentAt = ContinuousClock.now
        let answer: HTTPAnswer
        do {
            answer = try await connection.postJSON("/v1/events:batch", token: gameServerToken, json: ["events": events])
        } catch {
            record(Exchange(
                kind: .batch, port: port, sentAt: sentAt, answeredAt: .now, status: nil, isProblemJSON: false, hasRetryAfter: false, itemStatuses: [],
                error: "\(error)"), retry: items)
            throw error
        }
        let answeredAt = ContinuousClock.now
        var exchange = Exchange(
            kind: .batch, port: port, sentAt: sentAt, answeredAt: answeredAt, status: answer.status, problemType: answer.problemType,
            isProblemJSON: answer.headers["content-type"] == "application/problem+json", hasRetryAfter: answer.headers["retry-after"] != nil,
            itemStatuses: [])
        guard answer.status == 200, let results = answer.json["results"] as? [[String: Any]], results.count == items.count else {
            record(exchange, retry: items)
            return
        }
        var retry: [Item] = []
        var accepted: [(Item, [String: Any])] = []
        var refused: [String] = []
        for (item, result) in zip(items, results) {
            let status = (result["status"] as? NSNumber)?.intValue ?? 0
            exchange.itemStatuses.append(status)
            let type = ((result["problem"] as? [String: Any])?["type"] as? String).map { String($0.split(separator: "/").last ?? "") }
            exchange.itemProblemTypes.append(type)
            switch status {
            case 202: accepted.append((item, result["accepted"] as? [String: Any] ?? [:]))
            case 503: retry.append(item)
            case 409 where type == "idempotency-key-in-use": retry.append(item)
            default: refused.append("\(status) \(type ?? "-")")
            }
        }
        record(exchange, retry: retry, accepted: accepted, refused: refused)
    }

    private func playerLane(_ lane: Int, lanes: Int) async {
        var failures = 0
        var round = 0
        var lastAccepted: [String: Item] = [:]
        let mine = stride(from: lane, to: players.count, by: lanes).map { players[$0] }
        while !isStopped {
            guard let port = port(lane + 1 + failures) else { return }
            do {
                try await DeadlineHTTPConnection.with(port: port) { connection in
                    while !self.isStopped {
                        await self.pacePlayer()
                        let (member, bearer) = mine[round % mine.count]
                        let cycle = round / mine.count
                        round += 1
                        if let retry = self.takeRetries(max: 1, gameServer: false).first {
                            try await self.sendScore(retry, port: port, connection: &connection)
                        } else if cycle > 0, round % 20 == 0, let repeated = lastAccepted[member.id] {
                            // About 5% repeat the last accepted request exactly (same token, same key).
                            try await self.sendScore(repeated, port: port, connection: &connection)
                        } else {
                            let action = self.action(round: cycle)
                            let sentAt = ContinuousClock.now
                            let issued: HTTPAnswer
                            do {
                                issued = try await connection.postJSON("/v1/actions/\(action)/token", token: bearer, json: [:] as [String: String])
                            } catch {
                                self.record(Exchange(
                                    kind: .token, port: port, sentAt: sentAt, answeredAt: .now, status: nil, isProblemJSON: false, hasRetryAfter: false,
                                    itemStatuses: [], error: "\(error)"), retry: [])
                                throw error
                            }
                            self.record(Exchange(
                                kind: .token, port: port, sentAt: sentAt, answeredAt: .now, status: issued.status, problemType: issued.problemType,
                                isProblemJSON: issued.headers["content-type"] == "application/problem+json",
                                hasRetryAfter: issued.headers["retry-after"] != nil, itemStatuses: []), retry: [])
                            guard issued.status == 201, let token = issued.json["actionToken"] as? String else { continue }
                            let item = Item(member: member, action: action, idempotencyKey: UUID().uuidString.lowercased(), bearer: bearer, actionToken: token)
                            if try await self.sendScore(item, port: port, connection: &connection) { lastAccepted[member.id] = item }
                        }
                        failures = 0
                    }
                }
            } catch {
                failures += 1
                try? await Task.sleep(for: .milliseconds(min(50 * failures, 500)))
            }
        }
    }

    /// Sends the player scores still waiting for a definitive answer once more each.
    private func drainPlayerRetries() async {
        guard let port = port(0) else { return }
        var pending = takeRetries(max: 1_000, gameServer: false)
        _ = try? await DeadlineHTTPConnection.with(port: port) { connection in
            while !pending.isEmpty {
                // A failed send queues its own item again (``record``).
                let item = pending.removeFirst()
                try await self.sendScore(item, port: port, connection: &connection)
            }
        }
        state.withLock { state in for item in pending { state.retries[item.key] = item } }
    }

    /// Sends one player score; true when it was accepted.
    @discardableResult
    private func sendScore(_ item: Item, port: Int, connection: inout DeadlineHTTPConnection) async throws -> Bool {
        let body = ["action": item.action, "actionToken": item.actionToken!, "idempotencyKey": item.idempotencyKey]
        let sentAt = ContinuousClock.now
        let answer: HTTPAnswer
        do {
            answer = try await connection.postJSON("/v1/scores", token: item.bearer, json: body)
        } catch {
            record(Exchange(
                kind: .score, port: port, sentAt: sentAt, answeredAt: .now, status: nil, isProblemJSON: false, hasRetryAfter: false, itemStatuses: [],
                error: "\(error)"), retry: [item])
            throw error
        }
        let exchange = Exchange(
            kind: .score, port: port, sentAt: sentAt, answeredAt: .now, status: answer.status, problemType: answer.problemType,
            isProblemJSON: answer.headers["content-type"] == "application/problem+json", hasRetryAfter: answer.headers["retry-after"] != nil,
            itemStatuses: [])
        switch (answer.status, answer.problemType) {
        case (202, _):
            record(exchange, retry: [], accepted: [(item, answer.json)], refused: [])
            return true
        case (503, _), (409, "idempotency-key-in-use"), (500..., _): record(exchange, retry: [item])
        default: record(exchange, retry: [], refused: ["\(answer.status) \(answer.problemType ?? "-")"])
        }
        return false
    }

    private func record(_ exchange: Exchange, retry: [Item], accepted: [(Item, [String: Any])] = [], refused: [String] = []) {
        var violations: [String] = []
        if let status = exchange.status, status >= 500, status != 503 { violations.append("\(exchange.summary)") }
        if let status = exchange.status, status >= 400, !exchange.isProblemJSON { violations.append("not problem+json: \(exchange.summary)") }
        if exchange.status == 503, !exchange.hasRetryAfter { violations.append("503 without Retry-After: \(exchange.summary)") }
        var answers: [Accepted] = []
        for (item, json) in accepted {
            guard let eventID = json["eventId"] as? String, let occurredAt = (json["occurredAt"] as? NSNumber)?.int64Value,
                  let points = (json["points"] as? NSNumber)?.int64Value
            else {
                violations.append("a 202 without eventId/occurredAt/points for \(item.key)")
                continue
            }
            if points != self.points[item.action] { violations.append("\(item.action) accepted with \(points) points, the catalog says \(self.points[item.action] ?? -1)") }
            if eventID != ScoreIngest.eventID(userID: item.member.id, idempotencyKey: item.idempotencyKey) {
                violations.append("event id \(eventID) is not the one derived from the user and key of \(item.key)")
            }
            answers.append(Accepted(item: item, eventID: eventID, points: self.points[item.action] ?? points, occurredAt: occurredAt, answeredAt: exchange.answeredAt))
        }
        var exchange = exchange
        state.withLock { state in
            var firstSent: [String: ContinuousClock.Instant] = [:]
            for answer in answers where state.accepted[answer.item.key] == nil { firstSent[answer.item.key] = answer.item.createdAt }
            exchange.newlyAccepted = firstSent.count
            exchange.newlyAcceptedFirstSent = Array(firstSent.values)
            state.exchanges.append(exchange)
            for item in retry { state.retries[item.key] = item }
            for answer in answers {
                if let earlier = state.accepted[answer.item.key] {
                    if earlier.eventID != answer.eventID || earlier.occurredAt != answer.occurredAt {
                        violations.append("key \(answer.item.key) answered 202 twice with different events (\(earlier.eventID), \(answer.eventID))")
                    }
                } else {
                    state.accepted[answer.item.key] = answer
                    if state.repeatable.count < 5_000 { state.repeatable.append(answer.item) } else { state.repeatable[Int.random(in: 0..<5_000)] = answer.item }
                }
                state.retries[answer.item.key] = nil
            }
            for reason in refused { state.refused[reason, default: 0] += 1 }
            if state.violations.count < 200 { state.violations += violations }
        }
    }

    // MARK: - What happened

    var accepted: [Accepted] { state.withLock { Array($0.accepted.values) } }
    var acceptedCount: Int { state.withLock { $0.accepted.count } }
    var exchanges: [Exchange] { state.withLock { $0.exchanges } }
    var violations: [String] { state.withLock { $0.violations } }
    /// Items that never got a definitive answer (still 503 or unanswered when the drain gave up).
    var unresolved: [Item] { state.withLock { Array($0.retries.values) } }
    var refusals: [String: Int] { state.withLock { $0.refused } }
    var eventsSent: Int { scheduled.load(ordering: .relaxed) }

    /// Exchanges sent at or after `start` and answered (or failed) before `end`.
    func exchanges(sentAfter start: ContinuousClock.Instant, answeredBefore end: ContinuousClock.Instant) -> [Exchange] {
        exchanges.filter { $0.sentAt >= start && $0.answeredAt <= end }
    }

    /// The accepted rate over the traffic's life (first send to last acceptance).
    var acceptedPerSecond: Double {
        let accepted = self.accepted
        guard let last = accepted.map(\.answeredAt).max() else { return 0 }
        let seconds = Double((last - startedAt).components.seconds) + Double((last - startedAt).components.attoseconds) / 1e18
        return seconds > 0 ? Double(accepted.count) / seconds : 0
    }
}
