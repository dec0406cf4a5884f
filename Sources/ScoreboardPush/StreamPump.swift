import Foundation
import Hummingbird
import Metrics
import NIOCore
import ScoreboardCore
import ScoreboardHTTP
import ServiceLifecycle

/// What the stream loop hands a transport to send.
enum StreamOutput: Sendable {
    case items([OutboundItem])
    case heartbeat
    /// The client fell too far behind.
    case overflowed
    /// The stream ends; with the server's reason when it ended it on its own.
    case end(StreamEnd?)
}

// What both transports share: admission, the start of a board stream, the loop that feeds a client, its end.
extension PushGateway {
    // MARK: - Admission

    static func address(of context: PushRequestContext) -> String { context.remoteAddress?.ipAddress ?? "unknown" }

    /// Refuses an upgrade from an address (or server) already at its cap, before the connection exists.
    func checkCanOpenStream(_ request: Request, _ context: PushRequestContext) throws {
        _ = try admission.admit(address: Self.address(of: context), user: nil)
    }

    // MARK: - Starting a board stream

    /// Registers `buffer` for `stream` and queues its start: the missed updates, or a snapshot (delivery is held
    /// until the snapshot is queued, so no update overtakes it).
    func start(_ stream: BoardStream, since: Int64?, buffer: SubscriberBuffer) async throws {
        buffer.hold()
        defer { buffer.release() }
        switch feed.subscribe(buffer, to: stream, since: since) {
        case .resume(let missed):
            Counter(label: "push_resumes_total").increment()
            buffer.append(missed.map(OutboundItem.update))
        case .snapshot(let sequence):
            Counter(label: "push_snapshots_total").increment()
            let page = try await reader.snapshot(stream.board(period: stream.window.period(containing: now()).key))
            buffer.append([.snapshot(stream: stream.id, sequence: sequence, page: page)])
        }
    }

    // MARK: - The stream loop, for both transports

    /// Sends what `buffer` yields until the stream ends: heartbeats when idle; for a personal stream, its token
    /// re-checked once per heartbeat interval and at `exp`, the stream ended when it expired or was revoked; on
    /// graceful shutdown, a last `shutting-down` end. Returns after sending the end. The stream's ``StreamTimer`` runs
    /// meanwhile on `channel`'s event loop: it wakes the idle reader and closes the connection when a write watched by
    /// `watchdog` stalls.
    func pump(
        _ buffer: SubscriberBuffer, identity: Identity?, channel: any Channel, watchdog: WriteWatchdog, send: (StreamOutput) async throws -> Void
    ) async throws {
        let heartbeat = configuration.heartbeatInterval
        let timer = StreamTimer.start(
            channel: channel, buffer: buffer, watchdog: watchdog, writeTimeout: configuration.writeTimeout,
            interval: StreamTimer.interval(heartbeat: heartbeat, writeTimeout: configuration.writeTimeout))
        defer { timer.cancel() }
        try await withGracefulShutdownHandler {
            var nextTokenCheck = ContinuousClock.now + heartbeat
            while true {
                var wakeAt = ContinuousClock.now + heartbeat
                if let identity {
                    let untilExpiry = Duration.milliseconds(Int64(max(0, identity.expiresAt.timeIntervalSinceNow) * 1000) + 1)
                    wakeAt = min(wakeAt, .now + untilExpiry, nextTokenCheck)
                }
                let drained = await buffer.next(idleDeadline: wakeAt)
                if let identity, ContinuousClock.now >= nextTokenCheck || identity.expiresAt <= Date() {
                    nextTokenCheck = .now + heartbeat
                    if let end = await tokenEnd(identity) { buffer.close(end) }
                }
                switch drained {
                case nil:
                    try await send(.heartbeat)
                case .items(let items):
                    try await send(.items(items))
                case .overflowed:
                    Counter(label: "push_clients_dropped_total").increment()
                    try await send(.overflowed)
                    return
                case .closed(let end):
                    try await send(.end(end))
                    return
                }
            }
        } onGracefulShutdown: {
            buffer.close(.shuttingDown)
        }
    }

    /// Why a personal stream must end now, if it must.
    func tokenEnd(_ identity: Identity) async -> StreamEnd? {
        if identity.expiresAt <= Date() { return .tokenExpired }
        do {
            if try await authenticator.isRevoked(tokenID: identity.tokenID) { return .tokenRevoked }
        } catch {
            // Redis is down: the stream goes on (the check runs again next interval) rather than dropping every
            // personal stream during an outage.
            logger.debug("revocation check failed", metadata: ["error": "\(error)"])
        }
        return nil
    }

    /// Runs one open stream: counted on the connections gauge; when it ends, however it ends, its buffer leaves the
    /// feed and its admission slot is freed.
    func withOpenStream(transport: String, buffer: SubscriberBuffer, ticket: StreamAdmission.Ticket, _ body: () async throws -> Void) async throws {
        let gauge = Gauge(label: "push_connections", dimensions: [("transport", transport)])
        Connections.shared.change(gauge, by: 1)
        openStreams.insert(buffer)
        defer {
            openStreams.remove(buffer)
            feed.unsubscribe(buffer)
            Connections.shared.change(gauge, by: -1)
            withExtendedLifetime(ticket) {}
        }
        try await body()
    }
}
