/// How many events the worker's next batch may take: as many as it can apply in about `target`, learnt from the
/// batches it committed, starting small after every assignment.
///
/// Why: a batch is one transaction, and a rebalance (a worker joining or dying) fences every batch in flight. With a
/// fixed maximum, a worker far behind takes the maximum at once; on a loaded machine that batch can take longer than
/// the time between two rebalances, and then it never commits. Sized by time, a batch finishes between rebalances.
/// (It was the first suspect of a full-mode fault run that stood still; it was not that run's cause:
/// docs/reliability.md.) Idle, batches stay small anyway: the consumer takes only what is ready.
public struct BatchSizer: Sendable, Hashable {
    public let minimum: Int
    public let initial: Int
    public let maximum: Int
    /// The time one batch should take.
    public let target: Duration
    /// The cap on the next batch.
    public private(set) var limit: Int

    public init(minimum: Int = 50, initial: Int = 250, maximum: Int, target: Duration = .seconds(1)) {
        precondition(minimum >= 1 && minimum <= initial && initial <= maximum, "minimum ≤ initial ≤ maximum")
        self.minimum = minimum
        self.initial = initial
        self.maximum = maximum
        self.target = target
        self.limit = initial
    }

    /// After an assignment: the new partitions may be far behind and the speed is unknown again, so start small.
    public mutating func restart() {
        limit = initial
    }

    /// After a committed batch of `events` that took `elapsed` from its first poll to its commit. The limit moves
    /// towards what fits in `target` at the speed just seen, at most doubling per batch (a fast small batch says
    /// little about a large one), and grows only on a full batch: one the queue could not fill says nothing about
    /// more.
    public mutating func record(events: Int, elapsed: Duration) {
        guard events > 0 else { return }
        let seconds = max(Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18, 1e-6)
        let targetSeconds = Double(target.components.seconds) + Double(target.components.attoseconds) / 1e18
        let fitting = Double(events) / seconds * targetSeconds
        let next: Double
        if fitting < Double(limit) {
            next = fitting
        } else if events >= limit {
            next = min(fitting, Double(limit) * 2)
        } else {
            return
        }
        limit = min(maximum, max(minimum, Int(next.rounded(.down))))
    }
}
