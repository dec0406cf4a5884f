import Logging
import PostgresNIO
import ServiceLifecycle

/// The scoreboard's PostgreSQL: a `PostgresClient` pool, its schema, and migrations.
///
/// - Important: It is a `Service`: run it in the process's `ServiceGroup` before anything queries it (the pool
///   leases no connection unless `run()` is active), and list it before its users so it stops after them.
public final class PostgresStore: Service, Sendable {
    public let client: PostgresClient
    public let configuration: PostgresConfiguration
    private let logger: Logger

    public init(configuration: PostgresConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.client = PostgresClient(configuration: configuration.clientConfiguration, backgroundLogger: logger)
    }

    /// Runs the pool until graceful shutdown (or cancellation). The pool itself only stops when cancelled, so the
    /// store cancels it once the services listed after it (its users) have stopped.
    public func run() async {
        try? await cancelWhenGracefulShutdown {
            await self.client.run()
        }
    }

    /// Runs the client for the length of `body`, for one-shot commands and tests that have no `ServiceGroup`.
    public func withRunningClient<T: Sendable>(_ body: @escaping @Sendable (PostgresStore) async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { await self.run(); return nil }
            defer { group.cancelAll() }
            return try await body(self)
        }
    }

    /// Applies this module's migrations to ``PostgresConfiguration/schema``.
    @discardableResult
    public func migrate() async throws -> PostgresMigrator.Report {
        try await PostgresMigrator(client: client, schema: configuration.schema, logger: logger).migrate(Migration.bundled())
    }

    /// The server's version string (`SELECT version()`), as a health check.
    public func serverVersion() async throws -> String {
        let rows = try await client.query("SELECT current_setting('server_version')", logger: logger)
        for try await version in rows.decode(String.self) { return version }
        throw StorageError(code: .unavailable, reason: "SELECT version() returned no row")
    }
}
