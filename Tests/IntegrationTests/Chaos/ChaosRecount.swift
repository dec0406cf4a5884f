import Foundation
import ScoreboardCore
import ScoreboardGateway
import ScoreboardRedis
import Testing

/// The recount of a fault scenario: every board of the run computed from the accepted requests alone (points from
/// `pipelines/actions.yaml`, periods from the server-stamped `occurredAt` of each 202), compared exactly with the
/// Redis boards, the query API and PostgreSQL's member_totals, and the applied event ids with the accepted ones.
///
/// - `lost`: accepted events that PostgreSQL never applied, plus board entries (member × board, in Redis, the query
///   API or member_totals) below the recount.
/// - `duplicated`: applied events that no 202 promised (and that no unanswered retry explains), plus board entries
///   above the recount (a member missing from the recount but present on a board counts here too).
struct ChaosRecount {
    struct Outcome: Sendable {
        var lost: Int
        var duplicated: Int
        var details: [String]
    }

    let world: ChaosWorld
    let traffic: ChaosTraffic
    /// Accepted events the product does not promise to count if no worker had read them when the broker's in-memory
    /// log was lost (acknowledged before the broker died): by event id. Those never applied are left out of the
    /// recount and reported on their own; those applied are counted as any other.
    var excusableIfUnapplied: Set<String> = []

    /// The expected state: accepted events (deduplicated by key), plus those published without a final 202 that
    /// PostgreSQL applied (a client told 503 whose retries never got through: counted, and said so).
    struct Expected {
        var eventIDs: Set<String>
        var boards: [BoardKey: [String: Int64]]
        var memberTotals: [MemberTotalKey: Int64]
    }

    func expected(ledger: Ledger) -> (Expected, unansweredButApplied: Int) {
        var events = traffic.accepted.filter { !(excusableIfUnapplied.contains($0.eventID) && ledger.eventIDs[$0.eventID] == nil) }.map {
            (id: $0.eventID, member: $0.item.member, action: $0.item.action, points: $0.points, occurredAt: $0.occurredAt)
        }
        var unansweredButApplied = 0
        // One event id is one event: an unresolved request whose key another request got a 202 for is already in.
        var counted = Set(events.map(\.id))
        for item in traffic.unresolved {
            let id = ScoreIngest.eventID(userID: item.member.id, idempotencyKey: item.idempotencyKey)
            guard ledger.eventIDs[id] != nil, let points = traffic.points[item.action], counted.insert(id).inserted else { continue }
            // Its time is the server's: take the window periods of now, as the recount of a run within one period.
            unansweredButApplied += 1
            events.append((id, item.member, item.action, points, Int64(Date().timeIntervalSince1970 * 1000)))
        }
        let catalog = world.base.catalog.leaderboards
        var boards: [BoardKey: [String: Int64]] = [:]
        var totals: [MemberTotalKey: Int64] = [:]
        let windows = Set(catalog.boards.map(\.window))
        for event in events {
            let time = Timestamp(millisecondsSinceEpoch: event.occurredAt)
            let scoreEvent = ScoreEvent(
                eventID: event.id, userID: event.member.id, action: event.action, points: event.points, occurredAt: time,
                region: event.member.region, guild: event.member.guild, idempotencyKey: event.id, source: .gameServer)
            for board in catalog.boards(for: scoreEvent) { boards[board, default: [:]][event.member.id, default: 0] += event.points }
            for window in windows {
                let key = MemberTotalKey(
                    window: window.rawValue, period: window.period(containing: time).key, user: event.member.id, region: event.member.region,
                    guild: event.member.guild ?? "")
                totals[key, default: 0] += event.points
            }
        }
        return (Expected(eventIDs: Set(events.map(\.id)), boards: boards, memberTotals: totals), unansweredButApplied)
    }

    /// Waits until the workers caught up (PostgreSQL applied every accepted event and Redis holds the recount), or
    /// `limit` passed; then compares everything and returns the differences. Never throws for a difference: the
    /// caller reports and asserts.
    func settle(pushPort: Int, limit: Duration = ChaosMode.catchUp) async throws -> Outcome {
        let deadline = ContinuousClock.now + limit
        var redis = try world.redisReader()
        var caughtUp = false
        var ledgerComplete: ContinuousClock.Instant?
        var stuck = false
        // The recount depends on the ledger only through the events it excuses or adds: recomputed when it grew.
        var recount: (applied: Int, expected: Expected)?
        let mustApply = traffic.acceptedCount - excusableIfUnapplied.count
        // Workers that applied nothing for 30 s while events wait have stalled (or died): waiting longer shows nothing.
        var progress = (applied: -1, at: ContinuousClock.now)
        var stalled = false
        while ContinuousClock.now < deadline {
            do {
                let applied = try await world.appliedCount()
                if applied != progress.applied { progress = (applied, .now) }
                if applied < mustApply {
                    if ContinuousClock.now - progress.at > .seconds(30) { stalled = true; break }
                    try await Task.sleep(for: .milliseconds(500))
                    continue
                }
                let ledger = try await world.ledger()
                if recount?.applied != ledger.eventIDs.count { recount = (ledger.eventIDs.count, self.expected(ledger: ledger).0) }
                let expected = recount!.expected
                if expected.eventIDs.isSubset(of: Set(ledger.eventIDs.keys)) {
                    var same = true
                    for (board, scores) in expected.boards where try await ChaosWorld.board(board, in: redis) != scores { same = false; break }
                    if same { caughtUp = true; break }
                    // The workers write Redis right after PostgreSQL's commit: boards still wrong 20 s after
                    // PostgreSQL holds every event will stay wrong.
                    if let since = ledgerComplete {
                        if ContinuousClock.now - since > .seconds(20) { stuck = true; break }
                    } else {
                        ledgerComplete = .now
                    }
                }
            } catch {
                // A server still coming back: poll again (a fresh Redis pool in case the old one gave up).
                redis = (try? world.redisReader()) ?? redis
            }
            try await Task.sleep(for: .milliseconds(500))
        }
        var outcome = try await compare(pushPort: pushPort, redis: redis)
        if stalled {
            outcome.details.insert("the workers applied nothing for 30 s with \(mustApply - progress.applied) accepted events still to apply", at: 0)
        } else if stuck {
            outcome.details.insert("PostgreSQL holds every accepted event, but Redis still differed 20 s later", at: 0)
        } else if !caughtUp {
            outcome.details.insert("the workers had not caught up after \(limit)", at: 0)
        }
        return outcome
    }

    func compare(pushPort: Int, redis: RedisConnectionPool) async throws -> Outcome {
        let ledger = try await world.ledger()
        let (expected, unansweredButApplied) = self.expected(ledger: ledger)
        var details: [String] = []
        let applied = Set(ledger.eventIDs.keys)
        let missing = expected.eventIDs.subtracting(applied)
        let extra = applied.subtracting(expected.eventIDs)
        let goneWithTheLog = excusableIfUnapplied.subtracting(applied)
        if !goneWithTheLog.isEmpty {
            details.append(
                "\(goneWithTheLog.count) events acknowledged (202) before the broker died were never consumed and are gone with its in-memory log"
                    + " (not counted as lost: see docs/reliability.md)")
        }
        if !missing.isEmpty { details.append("\(missing.count) accepted events not in score_events, e.g. \(missing.sorted().prefix(3))") }
        if !extra.isEmpty { details.append("\(extra.count) events in score_events that no 202 promised, e.g. \(extra.sorted().prefix(3))") }
        if unansweredButApplied > 0 { details.append("\(unansweredButApplied) events applied whose client never got a 202 (retries unanswered)") }

        var short = 0, over = 0
        func compare(_ what: String, expected: [String: Int64], actual: [String: Int64]) {
            var differing: [String] = []
            for member in Set(expected.keys).union(actual.keys) {
                let want = expected[member] ?? 0, got = actual[member] ?? 0
                if got < want { short += 1; differing.append("\(member) \(got) < \(want)") }
                if got > want { over += 1; differing.append("\(member) \(got) > \(want)") }
            }
            if !differing.isEmpty { details.append("\(what): \(differing.count) members differ, e.g. \(differing.sorted().prefix(3))") }
        }
        // Redis: every board of the recount, and no board the recount does not know of.
        for (board, scores) in expected.boards.sorted(by: { $0.key.id < $1.key.id }) {
            compare("redis \(board)", expected: scores, actual: try await ChaosWorld.board(board, in: redis))
        }
        let keys = try await redis.send(["KEYS", "sb:board:*"]).array?.compactMap(\.string) ?? []
        let known = Set(expected.boards.keys.map(\.redisKey))
        for key in keys where !known.contains(key) {
            let members = try await redis.send(["ZCARD", key]).integer ?? 0
            if members > 0 { over += Int(members); details.append("redis board \(key) (\(members) members) is not in the recount") }
        }
        // The query API, page by page.
        try await HTTPConnection.with(port: pushPort) { connection in
            for (board, scores) in expected.boards.sorted(by: { $0.key.id < $1.key.id }) {
                var seen: [String: Int64] = [:]
                var offset = 0
                while true {
                    let path = "/v1/leaderboards/\(board.window.rawValue)/\(board.dimension.rawValue)" + (board.value.map { "/\($0)" } ?? "")
                        + "?period=\(board.period)&limit=1000&offset=\(offset)"
                    let answer = try await connection.send(.GET, path)
                    guard answer.status == 200 else {
                        details.append("query API \(path): \(answer.status) \(answer.problemType ?? "")")
                        break
                    }
                    let entries = answer.json["entries"] as? [[String: Any]] ?? []
                    for entry in entries {
                        if let user = entry["userId"] as? String, let score = (entry["score"] as? NSNumber)?.int64Value { seen[user] = score }
                    }
                    offset += entries.count
                    if entries.count < 1000 { break }
                }
                compare("query API \(board)", expected: scores, actual: seen)
            }
        }
        // PostgreSQL's member_totals.
        var totalsDiffering: [String] = []
        for key in Set(expected.memberTotals.keys).union(ledger.memberTotals.keys) {
            let want = expected.memberTotals[key] ?? 0, got = ledger.memberTotals[key] ?? 0
            if got < want { short += 1; totalsDiffering.append("\(key) \(got) < \(want)") }
            if got > want { over += 1; totalsDiffering.append("\(key) \(got) > \(want)") }
        }
        if !totalsDiffering.isEmpty { details.append("member_totals: \(totalsDiffering.count) rows differ, e.g. \(totalsDiffering.sorted().prefix(3))") }
        return Outcome(lost: missing.count + short, duplicated: extra.count + over, details: details)
    }
}

/// What a scenario reports: the one line, the traffic's contract violations, and the assertion.
struct ChaosSummary {
    var name: String
    var faults: Int
    var notes: [String] = []

    /// Prints `chaos <name>: lost = N, duplicated = M, events accepted = X at Y/s, faults = F` (and the details), and
    /// fails the test unless nothing was lost or duplicated and the traffic saw no contract violation.
    func report(_ outcome: ChaosRecount.Outcome, traffic: ChaosTraffic, sourceLocation: SourceLocation = #_sourceLocation) {
        let accepted = traffic.acceptedCount
        let line = "chaos \(name): lost = \(outcome.lost), duplicated = \(outcome.duplicated), events accepted = \(accepted) at "
            + String(format: "%.0f", traffic.acceptedPerSecond) + "/s, faults = \(faults) [\(ChaosMode.name) mode]"
        print(line)
        for note in notes { print("  \(name): \(note)") }
        let refusals = traffic.refusals.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }
        if !refusals.isEmpty { print("  \(name): refused items (not counted): \(refusals.joined(separator: ", "))") }
        for detail in outcome.details { print("  \(name): \(detail)") }
        let violations = traffic.violations
        for violation in violations.prefix(20) { print("  \(name): contract violation: \(violation)") }
        #expect(outcome.lost == 0 && outcome.duplicated == 0, "\(line)\n\(outcome.details.joined(separator: "\n"))", sourceLocation: sourceLocation)
        #expect(violations.isEmpty, "\(violations.count) contract violations, first: \(violations.prefix(5))", sourceLocation: sourceLocation)
        #expect(accepted > 0, "no score was accepted at all", sourceLocation: sourceLocation)
    }
}
