import NIOCore
import Synchronization

/// Marks a stream's write as pending while it runs, so that its ``StreamTimer`` can close a connection whose write
/// has not completed within a timeout: a client that stopped reading would otherwise hold its stream (and a graceful
/// shutdown) for ever, since a write waits for the socket to drain.
final class WriteWatchdog: Sendable {
    private let pendingSince = Mutex<ContinuousClock.Instant?>(nil)

    /// Runs one write, marked as pending while it runs.
    func watching(_ write: () async throws -> Void) async throws {
        pendingSince.withLock { $0 = .now }
        defer { pendingSince.withLock { $0 = nil } }
        try await write()
    }

    /// Whether a write has been pending for longer than `timeout` at `now`.
    func isStalled(after timeout: Duration, at now: ContinuousClock.Instant) -> Bool {
        guard let since = pendingSince.withLock({ $0 }) else { return false }
        return now - since > timeout
    }
}

/// One open stream's timer: a repeated task on its connection's event loop, so that an idle stream costs no Swift
/// task and no sleeping timer of its own. Each tick wakes the stream's parked reader once its idle deadline passed
/// (time for a heartbeat or a token check) and closes the connection when a write has been pending longer than
/// the write timeout (which fails the write).
enum StreamTimer {
    /// Starts ticking every `interval`; cancel the returned task when the stream ends.
    static func start(
        channel: any Channel, buffer: SubscriberBuffer, watchdog: WriteWatchdog, writeTimeout: Duration, interval: Duration
    ) -> RepeatedTask {
        let every = TimeAmount.nanoseconds(max(1_000_000, interval.components.seconds * 1_000_000_000 + interval.components.attoseconds / 1_000_000_000))
        return channel.eventLoop.scheduleRepeatedTask(initialDelay: every, delay: every) { task in
            let now = ContinuousClock.now
            if watchdog.isStalled(after: writeTimeout, at: now) {
                channel.close(promise: nil)
                task.cancel()
                return
            }
            buffer.wakeIfIdle(at: now)
        }
    }

    /// How often a stream's timer ticks: often enough that a heartbeat, a token check or a stalled write is acted on
    /// within a quarter of its interval.
    static func interval(heartbeat: Duration, writeTimeout: Duration) -> Duration {
        max(.milliseconds(10), min(heartbeat, writeTimeout) / 4)
    }
}
