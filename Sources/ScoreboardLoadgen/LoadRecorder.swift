import Histogram
import Synchronization

/// Latencies in microseconds, in an HDR histogram (three significant digits, up to ten minutes), safe to record
/// into from many tasks.
final class LatencyRecorder: Sendable {
    private let histogram = Mutex(Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three))

    func record(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        let micros = max(0, seconds * 1_000_000 + attoseconds / 1_000_000_000_000)
        histogram.withLock { _ = $0.record(UInt64(min(micros, 600_000_000))) }
    }

    var snapshot: Histogram<UInt64> { histogram.withLock { $0 } }
}

/// Counters of one run, safe to bump from many tasks.
final class LoadCounters: Sendable {
    struct Values: Sendable {
        var scheduled = 0
        var completed = 0
        var accepted = 0
        /// Answers by HTTP status (for a batch, its items' statuses).
        var statuses: [Int: Int] = [:]
        var transportErrors = 0
        var lastError: String?
    }

    private let values = Mutex(Values())

    func update(_ change: (inout Values) -> Void) { values.withLock { change(&$0) } }
    var snapshot: Values { values.withLock { $0 } }
}

/// What each player was promised (202s in the order they came) and what each subscriber has seen of it: the
/// end-to-end latency of an event is from its 202 to the first update that shows the player's total at least as
/// high as the sum of that player's accepted points up to it. Runs use fresh player ids, so totals start at zero.
final class AcceptedLedger: Sendable {
    struct Promise: Sendable {
        var total: Int64
        var at: ContinuousClock.Instant
    }

    private let promises = Mutex([String: [Promise]]())
    private let runningTotals = Mutex([String: Int64]())
    private let subscribers = Mutex([SubscriberProgress]())

    /// Subscribers told of each new promise: an update can reach a subscriber before the 202 is read here.
    func register(_ subscriber: SubscriberProgress) { subscribers.withLock { $0.append(subscriber) } }

    func accepted(userID: String, points: Int64, at instant: ContinuousClock.Instant) {
        let total = runningTotals.withLock { totals -> Int64 in
            totals[userID, default: 0] += points
            return totals[userID]!
        }
        promises.withLock { $0[userID, default: []].append(Promise(total: total, at: instant)) }
        // Outside the ledger's locks: a subscriber takes its own lock, then reads the ledger.
        for subscriber in subscribers.withLock({ $0 }) { subscriber.catchUp(userID: userID) }
    }

    var acceptedCount: Int { promises.withLock { $0.values.reduce(0) { $0 + $1.count } } }

    /// The promises of `userID` from `index` on whose totals `total` covers; returns their times and the next index.
    func covered(userID: String, from index: Int, total: Int64) -> (times: [ContinuousClock.Instant], next: Int) {
        promises.withLock { promises in
            guard let list = promises[userID] else { return ([], index) }
            var next = index
            var times: [ContinuousClock.Instant] = []
            while next < list.count, list[next].total <= total {
                times.append(list[next].at)
                next += 1
            }
            return (times, next)
        }
    }

    /// Promises a subscriber that reached `seen` (user → next index) has not seen.
    func unseen(by seen: [String: Int]) -> Int {
        promises.withLock { promises in promises.reduce(0) { $0 + $1.value.count - min($1.value.count, seen[$1.key] ?? 0) } }
    }
}
