import Foundation
import NIOCore
import Synchronization

/// One SSE subscriber's view of the run: for each player, how many of its promises it has seen and the highest
/// total an update showed.
final class SubscriberProgress: Sendable {
    private struct State {
        var seen: [String: Int] = [:]
        var highest: [String: Int64] = [:]
        var updates = 0
        var connected = false
        var failure: String?
    }

    private let state = Mutex(State())
    let ledger: AcceptedLedger
    let latency: LatencyRecorder

    init(ledger: AcceptedLedger, latency: LatencyRecorder) {
        self.ledger = ledger
        self.latency = latency
        ledger.register(self)
    }

    var updates: Int { state.withLock { $0.updates } }
    var isConnected: Bool { state.withLock { $0.connected } }
    func markConnected() { state.withLock { $0.connected = true } }
    /// Why the subscriber's stream ended, if it did.
    var failure: String? { state.withLock { $0.failure } }
    func failed(_ error: any Error) { state.withLock { $0.failure = "\(error)" } }

    /// An update arrived at `instant` showing `total` for `userID`.
    func saw(userID: String, total: Int64, at instant: ContinuousClock.Instant) {
        let times = state.withLock { state -> [ContinuousClock.Instant] in
            state.updates += 1
            state.highest[userID] = max(state.highest[userID] ?? 0, total)
            let (times, next) = ledger.covered(userID: userID, from: state.seen[userID] ?? 0, total: total)
            state.seen[userID] = next
            return times
        }
        for accepted in times { latency.record(instant - accepted) }
    }

    /// A promise of `userID` was just recorded: when an update already showed it (the update overtook the 202 on
    /// its way back), its latency is zero, and it must not wait for the player's next update to be matched.
    func catchUp(userID: String) {
        let early = state.withLock { state -> Int in
            guard let total = state.highest[userID] else { return 0 }
            let (times, next) = ledger.covered(userID: userID, from: state.seen[userID] ?? 0, total: total)
            state.seen[userID] = next
            return times.count
        }
        for _ in 0..<early { latency.record(.zero) }
    }

    /// ``catchUp(userID:)`` for every player.
    func catchUp() {
        let early = state.withLock { state -> Int in
            var early = 0
            for (userID, total) in state.highest {
                let (times, next) = ledger.covered(userID: userID, from: state.seen[userID] ?? 0, total: total)
                state.seen[userID] = next
                early += times.count
            }
            return early
        }
        for _ in 0..<early { latency.record(.zero) }
    }

    var unseen: Int { state.withLock { ledger.unseen(by: $0.seen) } }
}

enum SubscriberStream {
    /// Follows `/v1/streams/sse/{board}` until cancelled, reporting every member total an update carries (an
    /// update frame's `update.members`, one board's changes of a worker batch).
    static func follow(target: LoadTarget, board: String, progress: SubscriberProgress) async throws {
        do {
            try await stream(target: target, board: board, progress: progress)
        } catch {
            progress.failed(error)
            throw error
        }
    }

    private static func stream(target: LoadTarget, board: String, progress: SubscriberProgress) async throws {
        try await LoadHTTPConnection.with(host: target.host, port: target.port) { connection in
            var parser = ServerSentEventParser()
            let status = try await connection.stream("/v1/streams/sse/\(board)", headers: [("Accept", "text/event-stream")]) { chunk in
                let arrived = ContinuousClock.now
                progress.markConnected()
                for event in parser.feed(chunk) where event.type != "snapshot" {
                    guard let object = try? JSONSerialization.jsonObject(with: Data(event.data)) else { continue }
                    for (userID, total) in memberTotals(in: object) { progress.saw(userID: userID, total: total, at: arrived) }
                }
                return !Task.isCancelled
            }
            if status != 200 { throw LoadError("subscriber: /v1/streams/sse/\(board) answered \(status)") }
        }
    }

    /// Every `{"userId": …, "total": …}` inside `object`, at any depth.
    static func memberTotals(in object: Any) -> [(String, Int64)] {
        if let dictionary = object as? [String: Any] {
            if let userID = dictionary["userId"] as? String, let total = (dictionary["total"] as? NSNumber)?.int64Value { return [(userID, total)] }
            return dictionary.values.flatMap(memberTotals(in:))
        }
        if let array = object as? [Any] { return array.flatMap(memberTotals(in:)) }
        return []
    }
}

public struct LoadError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
