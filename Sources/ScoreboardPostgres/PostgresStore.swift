import Logging
import Metrics
import ScoreboardCore
import PostgresNIO
import ServiceLifecycle
import Synchronization
// PostgresClient throws ConnectionPoolError (`connectionCreationCircuitBreakerTripped`, …) but PostgresNIO does not
// re-export it: this lets every user of this module match on it.
@_exported import struct _ConnectionPoolModule.ConnectionPoolError

/// The scoreboard's PostgreSQL: a `PostgresClient` pool, its schema, and migrations.
///
/// - Important: It is a `Service`: run it in the process's `ServiceGroup` before anything queries it (the pool
///   leases no connection unless `run()` is active), and list it before its users so it stops after them.
public final class PostgresStore: Service, Sendable {
    public let client: PostgresClient
    public let configuration: PostgresConfiguration
    private let logger: Logger

    /// Finishes when ``run()`` has started the pool. A `ServiceGroup` starts its services concurrently, in no
    /// guaranteed order, so a user that queries as soon as it starts (migrations) waits for this first: PostgresNIO
    /// warns about a lease before `run()`.
    private let started = Latch()

    public init(configuration: PostgresConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.client = PostgresClient(configuration: configuration.clientConfiguration, backgroundLogger: logger)
        PoolUsage.shared.addCapacity(configuration.maximumConnections)
    }

    /// Runs the pool until graceful shutdown (or cancellation). The pool itself only stops when cancelled, so the
    /// store cancels it once the services listed after it (its users) have stopped.
    public func run() async {
        try? await cancelWhenGracefulShutdown {
            // `client.run()` marks the client running before its first suspension, and the waiters resumed here run
            // only after this task gives up its thread or on another one: the mark comes first in practice.
            self.started.open()
            await self.client.run()
        }
    }

    /// Returns once ``run()`` has started (at once after that).
    public func untilRunning() async {
        await started.wait()
    }

    /// Runs the client for the length of `body`, for one-shot commands and tests that have no `ServiceGroup`.
    public func withRunningClient<T: Sendable>(_ body: @escaping @Sendable (PostgresStore) async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { await self.run(); return nil }
            defer { group.cancelAll() }
            await untilRunning()
            return try await body(self)
        }
    }

    /// Applies this module's migrations to ``PostgresConfiguration/schema``.
    @discardableResult
    public func migrate() async throws -> PostgresMigrator.Report {
        await untilRunning()
        return try await PostgresMigrator(client: client, schema: configuration.schema, logger: logger).migrate(Migration.bundled())
    }

    /// The server's version string (`SELECT version()`), as a health check.
    public func serverVersion() async throws -> String {
        let rows = try await client.queryRows("SELECT current_setting('server_version')", logger: logger)
        guard let row = rows.first else { throw StorageError(code: .unavailable, reason: "SELECT version() returned no row") }
        return try row.decode(String.self)
    }
}

// MARK: - Reading rows without PostgresNIO 1.33.2's crash

extension PostgresClient {
    /// Runs `query` on a connection of the pool and returns all its rows; the lease ends with the last row read.
    ///
    /// - Important: Read rows with this, not by iterating the `PostgresRowSequence` that `query(_:)` returns.
    ///   PostgresNIO 1.33.2 kills the process (`preconditionFailure` in `RowStreamStateMachine.channelReadComplete`)
    ///   when the server closes a connection (an immediate stop, a crash-restart) while a row sequence is paused
    ///   because its consumer has not asked for more: NIO then reads the rest of the socket without waiting for a
    ///   `read`, which that state machine does not allow. See ``PostgresConnection/queryRows(_:logger:file:line:)``.
    @discardableResult
    public func queryRows(_ query: PostgresQuery, logger: Logger, file: String = #fileID, line: Int = #line) async throws -> [PostgresRow] {
        try await withCountedConnection { connection in
            try await connection.queryRows(query, logger: logger, file: file, line: line)
        }
    }
}

extension PostgresClient {
    /// Runs `body` in a transaction on a connection of the pool: BEGIN, `body`, COMMIT (ROLLBACK when `body`
    /// throws, and its error is rethrown as it is). Use this instead of PostgresNIO's `withTransaction`, whose BEGIN,
    /// COMMIT and ROLLBACK go through its async query API, so that a ROLLBACK after the server went away waits
    /// forever (see ``PostgresConnection/queryRows(_:logger:file:line:)``).
    /// - Important: When COMMIT fails because the connection closed, the transaction may or may not have committed.
    public func withTransactionRows<Result: Sendable>(
        logger: Logger, _ body: (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        try await withCountedConnection { connection in
            _ = try await connection.queryRows("BEGIN", logger: logger)
            let result: Result
            do {
                result = try await body(connection)
            } catch {
                // A failed ROLLBACK (the connection is gone) changes nothing: the server rolls back a lost session.
                _ = try? await connection.queryRows("ROLLBACK", logger: logger)
                throw error
            }
            _ = try await connection.queryRows("COMMIT", logger: logger)
            return result
        }
    }
}

extension PostgresClient {
    /// `withConnection`, counting the connection as leased for as long as `body` holds it
    /// (`scoreboard_postgres_pool_leased_connections`, read against `…_max_connections` by an alert).
    func withCountedConnection<Result>(_ body: (PostgresConnection) async throws -> Result) async throws -> Result {
        try await withConnection { connection in
            PoolUsage.shared.leased(+1)
            defer { PoolUsage.shared.leased(-1) }
            return try await body(connection)
        }
    }
}

/// How much of this process's PostgreSQL pools is in use, as two gauges. PostgresNIO 1.33.2 keeps its own pool
/// figures internal (its observability delegate only logs), so the store counts the leases it makes itself.
final class PoolUsage: Sendable {
    static let shared = PoolUsage()
    private let counts = Mutex<(leased: Int, capacity: Int)>((0, 0))

    func addCapacity(_ connections: Int) {
        let capacity = counts.withLock { counts in
            counts.capacity += connections
            return counts.capacity
        }
        Gauge(label: "scoreboard_postgres_pool_max_connections").record(capacity)
    }

    func leased(_ change: Int) {
        let leased = counts.withLock { counts in
            counts.leased += change
            return counts.leased
        }
        Gauge(label: "scoreboard_postgres_pool_leased_connections").record(leased)
    }

    var leasedNow: Int { counts.withLock { $0.leased } }
}

extension PostgresConnection {
    /// Runs `query` and returns all its rows.
    ///
    /// Two workarounds for PostgresNIO 1.33.2:
    /// - The rows come through its `EventLoopFuture` API, which collects them on the connection's event loop and asks
    ///   for the next ones as soon as a batch arrives, so the row stream is never paused between two socket reads and
    ///   the server closing the connection fails the query instead of crashing the process (the async
    ///   `PostgresRowSequence` pauses after every batch until its consumer asks for more: `AdaptiveRowBuffer.didYield`
    ///   always says stop).
    /// - A query sent on a connection that has already closed waits forever: PostgresNIO writes it to the channel
    ///   with no promise, and a closed channel drops it. Here the check and the write happen in one turn of the
    ///   connection's event loop, where the channel cannot close in between; a closed connection fails at once with
    ///   ``StorageError`` `unavailable` (transient).
    ///
    /// The cost is that a result is in memory at once: bound large reads with `LIMIT`.
    @discardableResult
    public func queryRows(_ query: PostgresQuery, logger: Logger, file: String = #fileID, line: Int = #line) async throws -> [PostgresRow] {
        let result = eventLoop.flatSubmit { () -> EventLoopFuture<PostgresQueryResult> in
            guard !self.isClosed else {
                return self.eventLoop.makeFailedFuture(StorageError(code: .unavailable, reason: "the PostgreSQL connection is closed"))
            }
            return self.query(query, logger: logger, file: file, line: line)
        }
        return try await result.get().rows
    }
}

// MARK: - Which failures to wait out

extension PostgresStore {
    /// Whether `error` says PostgreSQL is unreachable, restarting, overloaded or lost a race, so that the same work
    /// can succeed later unchanged: retry it after a capped backoff (and report not ready meanwhile). `false` for what
    /// a retry cannot fix (a bad statement, a broken constraint, a closure's own error) and for what we did ourselves
    /// (cancellation, shutting the pool down).
    ///
    /// - Note: The pool (PostgresNIO 1.33.2) keeps queries waiting for a connection while it cannot connect, and
    ///   after 60 s without one (not configurable through `PostgresClient`) it fails them, and every new one at once,
    ///   with `ConnectionPoolError.connectionCreationCircuitBreakerTripped`, while it goes on trying to connect in
    ///   the background with a growing backoff (capped at 60 s). That error is transient: the same client serves
    ///   queries again after its next successful attempt.
    public static func isTransient(_ error: any Error) -> Bool {
        switch error {
        case let error as PostgresTransactionError:
            // The first error of BEGIN, the body, COMMIT: the one that stopped the transaction.
            guard let cause = error.beginError ?? error.closureError ?? error.commitError else { return false }
            return isTransient(cause)
        case let error as ConnectionPoolError:
            return error == .connectionCreationCircuitBreakerTripped
        case let error as StorageError:
            return error.code == .unavailable
        case let error as PSQLError:
            switch error.code {
            case .serverClosedConnection, .clientClosedConnection, .connectionError, .uncleanShutdown:
                return true
            case .server:
                return error.serverInfo?[.sqlState].map(isTransientSQLState) ?? false
            default:
                return false
            }
        case is IOError, is ChannelError, is NIOConnectionError:
            return true
        default:
            return false
        }
    }

    /// SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html) that a later attempt can pass.
    static func isTransientSQLState(_ state: String) -> Bool {
        if state.hasPrefix("08") { return true }  // connection exception
        return [
            "40001",  // serialization_failure
            "40P01",  // deadlock_detected
            "53300",  // too_many_connections
            "55P03",  // lock_not_available
            "57014",  // query_canceled: statement_timeout (see PostgresConfiguration.statementTimeout)
            "57P01",  // admin_shutdown: smart or fast stop, pg_terminate_backend
            "57P02",  // crash_shutdown: another backend crashed, the server restarts
            "57P03",  // cannot_connect_now: starting up or recovering
            "25P03",  // idle_in_transaction_session_timeout
        ].contains(state)
    }
}
