/// Capped exponential backoff with jitter, for retrying a call to a server that is down.
///
/// Each delay is drawn uniformly from the upper half of the current step (so many clients that failed together do
/// not retry together), and the step doubles up to ``maximum``. ``reset()`` after a success starts over.
public struct RetryBackoff: Sendable {
    public var initial: Duration
    public var maximum: Duration
    /// Failures since the last success.
    public private(set) var attempts = 0

    public init(initial: Duration = .milliseconds(100), maximum: Duration = .seconds(5)) {
        precondition(initial > .zero && maximum >= initial, "a backoff grows from a positive initial delay")
        self.initial = initial
        self.maximum = maximum
    }

    /// The delay before the next attempt, using `generator` for the jitter.
    public mutating func nextDelay(using generator: inout some RandomNumberGenerator) -> Duration {
        // Doubling stops once the cap is reached, so the step never overflows however long an outage lasts.
        var step = initial
        var doublings = 0
        while doublings < attempts && step < maximum {
            step *= 2
            doublings += 1
        }
        step = min(step, maximum)
        attempts += 1
        let fraction = Double.random(in: 0.5...1.0, using: &generator)
        return step * fraction
    }

    public mutating func nextDelay() -> Duration {
        var generator = SystemRandomNumberGenerator()
        return nextDelay(using: &generator)
    }

    public mutating func reset() {
        attempts = 0
    }
}

/// The operation's result, or a ``TimeoutError`` once `duration` has passed (the operation is then cancelled, and
/// this returns when it has ended: callers must make their operations respond to cancellation).
public func withTimeout<T: Sendable>(_ duration: Duration, _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: duration)
            throw TimeoutError(duration: duration)
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}

public struct TimeoutError: Error, CustomStringConvertible {
    public var duration: Duration
    public init(duration: Duration) { self.duration = duration }
    public var description: String { "no answer within \(duration)" }
}
