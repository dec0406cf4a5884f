import NIOCore
import Synchronization

/// Closes a connection whose pending write has not completed within a timeout: a client that stopped reading
/// would otherwise hold its stream (and a graceful shutdown) for ever, since a write waits for the socket to drain.
final class WriteWatchdog: Sendable {
    private let pendingSince = Mutex<ContinuousClock.Instant?>(nil)

    /// Runs one write, marked as pending while it runs.
    func watching(_ write: () async throws -> Void) async throws {
        pendingSince.withLock { $0 = .now }
        defer { pendingSince.withLock { $0 = nil } }
        try await write()
    }

    /// Until cancelled, looks every quarter of `timeout` whether a write has been pending longer, and if so closes
    /// `channel` (which fails the write).
    func closeWhenStalled(_ channel: any Channel, after timeout: Duration) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: timeout / 4)
            if let since = pendingSince.withLock({ $0 }), ContinuousClock.now - since > timeout {
                channel.close(promise: nil)
                return
            }
        }
    }
}
