import Logging
import Synchronization

/// A bounded pool of hiredis connections for async code.
///
/// Each connection does its blocking I/O on a serial queue of its own, so callers suspend and no event loop or
/// cooperative thread blocks. A connection that failed, or that the server closed while it sat idle (for example
/// because redis-server restarted), is dropped and a fresh one is made on the next lease: the pool recovers by itself.
public final class RedisConnectionPool: Sendable {
    public let configuration: RedisConfiguration
    private let logger: Logger
    private let state: Mutex<State>

    private struct State {
        var idle: [HiredisConnection] = []
        var openCount = 0
        var waiters: [CheckedContinuation<Lease, Never>] = []
        var isClosed = false
    }

    /// What a waiter is handed: a connection to reuse, or the right to open a new one.
    private enum Lease {
        case reuse(HiredisConnection)
        case open
        case closed
    }

    public init(configuration: RedisConfiguration, logger: Logger) {
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "redis.endpoint"] = "\(configuration.host):\(configuration.port)"
        self.logger = logger
        self.state = Mutex(State())
    }

    // MARK: - Commands

    /// Sends one command, for example `["ZADD", key, "10", member]`.
    /// - Returns: The reply; a server error reply is thrown as ``RedisError`` with code `server`.
    /// - Throws: ``RedisError``.
    @discardableResult
    public func send(_ command: [String]) async throws -> RedisReply {
        try await withConnection { try await $0.send(command) }.throwingServerError()
    }

    /// Sends all commands in one round trip and returns their replies in order. Server errors stay in the replies
    /// (`.error`), so one failed command does not hide the others' results.
    public func pipeline(_ commands: [[String]]) async throws -> [RedisReply] {
        guard !commands.isEmpty else { return [] }
        return try await withConnection { try await $0.pipeline(commands) }
    }

    /// Runs a Lua script by its SHA-1 (`EVALSHA`), or by its source when the server does not know it (`NOSCRIPT`,
    /// as after a restart or `SCRIPT FLUSH`).
    @discardableResult
    public func run(_ script: RedisScript, keys: [String], arguments: [String]) async throws -> RedisReply {
        let evalsha = ["EVALSHA", script.sha1, String(keys.count)] + keys + arguments
        return try await withConnection { connection in
            let reply = try await connection.send(evalsha)
            if case .error(let message) = reply, message.hasPrefix("NOSCRIPT") {
                // EVAL with the source runs it and caches it for the next EVALSHA. Not SCRIPT LOAD and EVALSHA
                // again: a SCRIPT FLUSH from another client between the two would make that fail the same way.
                return try await connection.send(["EVAL", script.source, String(keys.count)] + keys + arguments)
            }
            return reply
        }.throwingServerError()
    }

    /// Checks the server answers: `PING`, then the `redis_version` from `INFO server`.
    public func serverVersion() async throws -> String {
        let info = try await send(["INFO", "server"]).string ?? ""
        for line in info.split(whereSeparator: \.isNewline) where line.hasPrefix("redis_version:") {
            return String(line.dropFirst("redis_version:".count))
        }
        throw RedisError(code: .unexpectedReply, reason: "INFO server has no redis_version")
    }

    // MARK: - Leasing

    func withConnection<T: Sendable>(_ body: (HiredisConnection) async throws -> T) async throws -> T {
        let connection = try await lease()
        do {
            let result = try await body(connection)
            release(connection, reusable: true)
            return result
        } catch let error as RedisError where error.code == .connection {
            release(connection, reusable: false)
            throw error
        } catch {
            // Server errors and the like leave the connection in a known state.
            release(connection, reusable: await connection.isUsable())
            throw error
        }
    }

    private func lease() async throws -> HiredisConnection {
        while true {
            let maximum = configuration.maximumConnections
            let next: Lease? = state.withLock { Self.takeLease(&$0, maximum: maximum) }
            let lease: Lease
            if let next {
                lease = next
            } else {
                lease = await withCheckedContinuation { continuation in
                    let immediate: Lease? = state.withLock { state in
                        // Check again under the lock: a release may have happened since.
                        if let lease = Self.takeLease(&state, maximum: maximum) { return lease }
                        state.waiters.append(continuation)
                        return nil
                    }
                    if let immediate { continuation.resume(returning: immediate) }
                }
            }
            switch lease {
            case .closed:
                throw RedisError(code: .closed, reason: "the Redis pool is closed")
            case .reuse(let connection):
                if await connection.isUsable() { return connection }
                logger.debug("Dropping a Redis connection the server closed")
                discard()
            case .open:
                do {
                    return try await HiredisConnection.connect(configuration)
                } catch {
                    discard()
                    throw error
                }
            }
        }
    }

    /// What a caller may have right now without waiting, if anything.
    private static func takeLease(_ state: inout State, maximum: Int) -> Lease? {
        if state.isClosed { return .closed }
        if let connection = state.idle.popLast() { return .reuse(connection) }
        if state.openCount < maximum {
            state.openCount += 1
            return .open
        }
        return nil
    }

    private func release(_ connection: HiredisConnection, reusable: Bool) {
        let waiter: (CheckedContinuation<Lease, Never>, Lease)? = state.withLock { state in
            if !reusable || state.isClosed {
                state.openCount -= 1
                guard !state.isClosed, !state.waiters.isEmpty else { return nil }
                state.openCount += 1
                return (state.waiters.removeFirst(), .open)
            }
            if !state.waiters.isEmpty { return (state.waiters.removeFirst(), .reuse(connection)) }
            state.idle.append(connection)
            return nil
        }
        if let (continuation, lease) = waiter { continuation.resume(returning: lease) }
    }

    /// Forgets a connection that will not come back, and lets a waiter open one in its place.
    private func discard() {
        let waiter: CheckedContinuation<Lease, Never>? = state.withLock { state in
            state.openCount -= 1
            guard !state.waiters.isEmpty else { return nil }
            state.openCount += 1
            return state.waiters.removeFirst()
        }
        waiter?.resume(returning: .open)
    }

    /// Closes idle connections and fails waiting and future leases. Leased connections close when returned.
    public func close() {
        let (idle, waiters) = state.withLock { state in
            state.isClosed = true
            defer { state.idle.removeAll(); state.waiters.removeAll() }
            state.openCount -= state.idle.count
            return (state.idle, state.waiters)
        }
        _ = idle  // released here; deinit frees each context
        for waiter in waiters { waiter.resume(returning: .closed) }
    }
}
