import Crypto
import Foundation
import Logging
import PostgresNIO

/// One versioned migration: a file `NNNN_name.sql` shipped with this module.
public struct Migration: Sendable, Hashable {
    public var version: Int
    public var name: String
    public var sql: String

    /// SHA-256 of the SQL: an applied migration whose file changed afterwards is refused, not silently skipped.
    public var checksum: String {
        SHA256.hash(data: Array(sql.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// The migrations in this module's `Migrations` folder, in version order.
    /// - Throws: ``StorageError`` for a file name without a version, or two files with one version.
    public static func bundled() throws -> [Migration] {
        guard let folder = Bundle.module.url(forResource: "Migrations", withExtension: nil) else {
            throw StorageError(code: .migration, reason: "the Migrations resource folder is missing from the bundle")
        }
        return try load(from: folder)
    }

    static func load(from folder: URL) throws -> [Migration] {
        let files = try FileManager.default.contentsOfDirectory(at: folder, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "sql" }
        var migrations: [Migration] = []
        for file in files {
            let base = file.deletingPathExtension().lastPathComponent
            let parts = base.split(separator: "_", maxSplits: 1)
            guard parts.count == 2, let version = Int(parts[0]), version > 0 else {
                throw StorageError(code: .migration, reason: "\(file.lastPathComponent): name migrations NNNN_description.sql")
            }
            migrations.append(Migration(version: version, name: String(parts[1]), sql: try String(contentsOf: file, encoding: .utf8)))
        }
        migrations.sort { $0.version < $1.version }
        for (previous, next) in zip(migrations, migrations.dropFirst()) where previous.version == next.version {
            throw StorageError(code: .migration, reason: "two migrations have version \(next.version)")
        }
        return migrations
    }
}

/// Applies migrations in order, each in its own transaction, and records them in `schema_migrations`.
///
/// A session advisory lock makes concurrent runs (several workers starting at once) take turns; a migration
/// already recorded is skipped, so applying twice is a no-op.
public struct PostgresMigrator: Sendable {
    public struct Report: Sendable, Hashable {
        public var applied: [Int]
        public var alreadyApplied: [Int]
    }

    let client: PostgresClient
    let schema: String
    let logger: Logger

    public init(client: PostgresClient, schema: String, logger: Logger) {
        self.client = client
        self.schema = schema
        self.logger = logger
    }

    /// - Throws: ``StorageError`` with code `migration` when a recorded migration's file changed; PostgreSQL's error
    ///   when a migration's SQL fails (that migration's transaction is rolled back, earlier ones stay).
    @discardableResult
    public func migrate(_ migrations: [Migration]) async throws -> Report {
        try await client.withConnection { connection in
            let lockKey = Self.advisoryLockKey(schema: schema)
            try await connection.query("SELECT pg_advisory_lock(\(lockKey))", logger: logger)
            do {
                let report = try await migrate(migrations, on: connection)
                try await connection.query("SELECT pg_advisory_unlock(\(lockKey))", logger: logger)
                return report
            } catch {
                _ = try? await connection.query("SELECT pg_advisory_unlock(\(lockKey))", logger: logger)
                throw error
            }
        }
    }

    private func migrate(_ migrations: [Migration], on connection: PostgresConnection) async throws -> Report {
        let quotedSchema = "\"" + schema.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        try await connection.query("CREATE SCHEMA IF NOT EXISTS \(unescaped: quotedSchema)", logger: logger)
        try await connection.query(
            """
            CREATE TABLE IF NOT EXISTS \(unescaped: quotedSchema).schema_migrations (
                version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())
            """, logger: logger)
        var recorded: [Int: String] = [:]
        let rows = try await connection.query("SELECT version, checksum FROM \(unescaped: quotedSchema).schema_migrations", logger: logger)
        for try await (version, checksum) in rows.decode((Int, String).self) { recorded[version] = checksum }

        var report = Report(applied: [], alreadyApplied: [])
        for migration in migrations {
            if let checksum = recorded[migration.version] {
                guard checksum == migration.checksum else {
                    throw StorageError(code: .migration, reason: "migration \(migration.version)_\(migration.name) was changed after it was applied")
                }
                report.alreadyApplied.append(migration.version)
                continue
            }
            logger.info("Applying migration", metadata: ["postgres.migration": "\(migration.version)_\(migration.name)"])
            try await connection.withTransaction(logger: logger) { connection in
                try await connection.query("SET LOCAL search_path TO \(unescaped: quotedSchema)", logger: logger)
                for statement in SQLScript.statements(migration.sql) {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.query(
                    """
                    INSERT INTO \(unescaped: quotedSchema).schema_migrations (version, name, checksum)
                    VALUES (\(migration.version), \(migration.name), \(migration.checksum))
                    """, logger: logger)
            }
            report.applied.append(migration.version)
        }
        return report
    }

    /// A stable 63-bit key per schema, so migrations of different schemas do not wait for each other.
    static func advisoryLockKey(schema: String) -> Int64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in ("scoreboard.migrations." + schema).utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return Int64(bitPattern: hash & 0x7fff_ffff_ffff_ffff)
    }
}
