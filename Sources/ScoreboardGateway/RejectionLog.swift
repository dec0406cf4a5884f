import Logging
import Metrics
import ScoreboardCore
import ScoreboardHTTP
import ServiceLifecycle
import Synchronization

/// Publishes refused requests to the rejections topic without holding up the refusal: `record` only buffers, and this
/// service sends in the background.
///
/// When the broker lags, the buffer drops the oldest entries, but it keeps two lanes: the fraud signals (forged,
/// replayed or revoked tokens, reused keys, banned users) and everything else (junk bodies, missing tokens, rate
/// limits). A flood of junk, cheap for anyone to send, can then only push out other junk, never the signals the fraud
/// rules need.
public final class RejectionLog: Service, Sendable {
    /// The reasons that say someone is manipulating tokens or keys, not merely sending garbage.
    public static let fraudSignals: Set<String> = [
        Problem.Kind.invalidActionToken, .actionTokenReplayed, .actionTokenExpired, .tokenRevoked, .idempotencyKeyReused, .banned,
    ].reduce(into: []) { $0.insert($1.rawValue) }

    private let port: any RejectionPublishing
    private let buffer: Mutex<RejectionBuffer>
    /// Wakes the sender; one pending wake-up is enough, since it drains everything buffered.
    private let wakeUps: AsyncStream<Void>
    private let wake: AsyncStream<Void>.Continuation
    private let logger: Logger

    public init(port: any RejectionPublishing, logger: Logger, capacityPerLane: Int = 10_000) {
        self.port = port
        self.logger = logger
        buffer = Mutex(RejectionBuffer(capacityPerLane: capacityPerLane))
        (wakeUps, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    public func record(_ rejection: Rejection) {
        Counter(label: "gateway_rejections_total", dimensions: [("reason", rejection.reason)]).increment()
        let isSignal = Self.fraudSignals.contains(rejection.reason)
        let dropped = buffer.withLock { $0.append(rejection, isFraudSignal: isSignal) }
        if dropped { Counter(label: "gateway_rejections_dropped_total", dimensions: [("lane", isSignal ? "fraud" : "other")]).increment() }
        wake.yield()
    }

    /// Takes what is buffered, fraud signals first (for tests and the sender).
    public func takeBuffered() -> [Rejection] {
        buffer.withLock { $0.takeAll() }
    }

    public func run() async throws {
        for await _ in wakeUps.cancelOnGracefulShutdown() {
            for rejection in takeBuffered() {
                do {
                    try await port.publish(rejection)
                } catch {
                    logger.warning("rejection not published", metadata: ["reason": "\(rejection.reason)", "error": "\(error)"])
                }
            }
        }
    }
}

/// Two bounded FIFO lanes; a full lane drops its own oldest entry.
struct RejectionBuffer {
    private var signals: Lane
    private var others: Lane

    init(capacityPerLane: Int) {
        signals = Lane(capacity: capacityPerLane)
        others = Lane(capacity: capacityPerLane)
    }

    /// - Returns: Whether an older entry was dropped to make room.
    mutating func append(_ rejection: Rejection, isFraudSignal: Bool) -> Bool {
        isFraudSignal ? signals.append(rejection) : others.append(rejection)
    }

    mutating func takeAll() -> [Rejection] {
        signals.takeAll() + others.takeAll()
    }

    struct Lane {
        let capacity: Int
        private var entries: [Rejection] = []
        /// Index of the oldest entry: dropping from the front is O(1), and the array is compacted when half is dead.
        private var head = 0

        init(capacity: Int) { self.capacity = max(1, capacity) }

        mutating func append(_ rejection: Rejection) -> Bool {
            entries.append(rejection)
            guard entries.count - head > capacity else { return false }
            head += 1
            if head > capacity {
                entries.removeFirst(head)
                head = 0
            }
            return true
        }

        mutating func takeAll() -> [Rejection] {
            defer { entries.removeAll(keepingCapacity: true); head = 0 }
            return Array(entries[head...])
        }
    }
}
