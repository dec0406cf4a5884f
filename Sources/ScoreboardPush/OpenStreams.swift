import ServiceLifecycle
import Synchronization

/// Every open stream's buffer, so that a graceful shutdown can end them all (SSE: a last `end` event; WebSocket:
/// close 1001) before the HTTP server stops; a stream opened after that is ended at once.
public final class OpenStreams: Sendable {
    struct State {
        var buffers: [ObjectIdentifier: SubscriberBuffer] = [:]
        var isShuttingDown = false
    }

    private let state = Mutex(State())

    public init() {}

    func insert(_ buffer: SubscriberBuffer) {
        let endNow = state.withLock { state -> Bool in
            if state.isShuttingDown { return true }
            state.buffers[ObjectIdentifier(buffer)] = buffer
            return false
        }
        if endNow { buffer.close(.shuttingDown) }
    }

    func remove(_ buffer: SubscriberBuffer) {
        _ = state.withLock { $0.buffers.removeValue(forKey: ObjectIdentifier(buffer)) }
    }

    /// Ends every open stream with `shutting-down` (readers are woken outside the lock).
    func endAll() {
        let buffers = state.withLock { state in
            state.isShuttingDown = true
            return Array(state.buffers.values)
        }
        for buffer in buffers { buffer.close(.shuttingDown) }
    }

    public var count: Int { state.withLock { $0.buffers.count } }
}

/// Ends the open streams on graceful shutdown and waits (at most `timeout`) until they are gone.
///
/// - Important: List it after the HTTP application: a `ServiceGroup` shuts its services down in reverse order, so
///   this one runs first, while the server still holds the connections, and the server then finds no stream to
///   wait for. (Left to the server, an SSE response never ends, and the WebSocket library closes with 1000.)
public struct OpenStreamsShutdown: Service {
    let streams: OpenStreams
    let timeout: Duration

    public func run() async throws {
        // Returns on the shutdown signal, or throws when the group is cancelled: either way, end the streams.
        try? await gracefulShutdown()
        streams.endAll()
        let deadline = ContinuousClock.now + timeout
        // Cancelled (not a graceful shutdown): the streams are ended, nothing to wait for.
        while streams.count > 0 && ContinuousClock.now < deadline && !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}
