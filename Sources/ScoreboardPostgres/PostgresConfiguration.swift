import PostgresNIO

/// Where PostgreSQL is, parsed from a `postgres://user:password@host:port/database?sslmode=…` URL.
public struct PostgresConfiguration: Sendable, Hashable {
    public var host: String
    public var port: Int
    public var username: String
    public var password: String?
    public var database: String
    /// The schema every query runs in (`search_path`); migrations create it. Tests use one per test.
    public var schema: String = "scoreboard"
    public var tls: TLSMode = .disable
    public var maximumConnections = 20
    /// The server cancels a statement that runs longer (`statement_timeout`; SQLSTATE 57014, which
    /// ``PostgresStore/isTransient(_:)`` counts as transient): a query stuck behind a lock or a runaway plan ends,
    /// where cancelling its task would not (PostgresNIO does not interrupt a running query). `nil`: no limit.
    public var statementTimeout: Duration? = .seconds(30)
    /// The server ends a session that sits idle inside a transaction this long (`idle_in_transaction_session_timeout`),
    /// so that a stalled worker does not hold its row locks until it is restarted. `nil`: no limit.
    public var idleInTransactionTimeout: Duration? = .seconds(60)

    public enum TLSMode: String, Sendable, Hashable {
        case disable, prefer, require
    }

    public init(host: String, port: Int = 5432, username: String, password: String?, database: String) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
    }

    /// - Throws: ``StorageError`` with code `configuration` when the URL is not a PostgreSQL URL.
    public init(url: String) throws {
        guard let schemeEnd = url.range(of: "://"), ["postgres", "postgresql"].contains(url[..<schemeEnd.lowerBound]) else {
            throw StorageError(code: .configuration, reason: "a PostgreSQL URL starts with postgres://")
        }
        var rest = url[schemeEnd.upperBound...]
        var query: Substring = ""
        if let mark = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: mark)...]
            rest = rest[..<mark]
        }
        var username = "postgres"
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at].split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            username = String(credentials[0]).removingPercentEncodingIfPossible
            if credentials.count > 1 { password = String(credentials[1]).removingPercentEncodingIfPossible }
            rest = rest[rest.index(after: at)...]
        }
        guard let slash = rest.firstIndex(of: "/"), rest.index(after: slash) < rest.endIndex else {
            throw StorageError(code: .configuration, reason: "a PostgreSQL URL names a database: postgres://host:port/database")
        }
        let database = String(rest[rest.index(after: slash)...])
        let hostPort = rest[..<slash]
        var host = String(hostPort)
        var port = 5432
        if let colon = hostPort.lastIndex(of: ":") {
            guard let number = Int(hostPort[hostPort.index(after: colon)...]), (1...65535).contains(number) else {
                throw StorageError(code: .configuration, reason: "the port in a PostgreSQL URL is a number from 1 to 65535")
            }
            port = number
            host = String(hostPort[..<colon])
        }
        guard !host.isEmpty else { throw StorageError(code: .configuration, reason: "a PostgreSQL URL names a host") }
        self.init(host: host, port: port, username: username, password: password, database: database)
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            guard parts.count == 2 else { continue }
            switch parts[0] {
            case "sslmode":
                switch parts[1] {
                case "disable": tls = .disable
                case "prefer", "allow": tls = .prefer
                case "require", "verify-ca", "verify-full": tls = .require
                default: throw StorageError(code: .configuration, reason: "unknown sslmode \(parts[1])")
                }
            case "schema", "search_path":
                schema = String(parts[1])
            case "statement_timeout", "idle_in_transaction_session_timeout":
                // In milliseconds, as PostgreSQL reads a bare number; 0 turns the limit off, as in PostgreSQL.
                guard let milliseconds = Int64(parts[1]), milliseconds >= 0 else {
                    throw StorageError(code: .configuration, reason: "\(parts[0]) is a number of milliseconds")
                }
                let limit: Duration? = milliseconds == 0 ? nil : .milliseconds(milliseconds)
                if parts[0] == "statement_timeout" { statementTimeout = limit } else { idleInTransactionTimeout = limit }
            default:
                continue
            }
        }
    }

    /// PostgresNIO's configuration for this database, with `search_path` set to ``schema`` at connection start.
    public var clientConfiguration: PostgresClient.Configuration {
        let tlsConfiguration: PostgresClient.Configuration.TLS
        switch tls {
        case .disable: tlsConfiguration = .disable
        case .prefer: tlsConfiguration = .prefer(.makeClientConfiguration())
        case .require: tlsConfiguration = .require(.makeClientConfiguration())
        }
        var configuration = PostgresClient.Configuration(
            host: host, port: port, username: username, password: password, database: database, tls: tlsConfiguration)
        configuration.options.maximumConnections = maximumConnections
        configuration.options.additionalStartupParameters = [("search_path", "\(schema),public")]
        if let statementTimeout {
            configuration.options.additionalStartupParameters.append(("statement_timeout", "\(statementTimeout.milliseconds)"))
        }
        if let idleInTransactionTimeout {
            configuration.options.additionalStartupParameters.append(
                ("idle_in_transaction_session_timeout", "\(idleInTransactionTimeout.milliseconds)"))
        }
        configuration.options.connectTimeout = .seconds(5)
        return configuration
    }
}

extension Duration {
    /// Whole milliseconds, at least 1 for a positive duration (PostgreSQL reads 0 as "no limit").
    fileprivate var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return max(seconds * 1000 + attoseconds / 1_000_000_000_000_000, self > .zero ? 1 : 0)
    }
}

extension String {
    fileprivate var removingPercentEncodingIfPossible: String {
        guard contains("%") else { return self }
        var bytes: [UInt8] = []
        var iterator = utf8.makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%"), let high = iterator.next(), let low = iterator.next(),
               let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16) {
                bytes.append(value)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// The one error type of the storage module.
public struct StorageError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { name }

        public static let configuration = Code(name: "configuration")
        public static let migration = Code(name: "migration")
        public static let unavailable = Code(name: "unavailable")
    }

    public var code: Code
    public var reason: String

    public init(code: Code, reason: String) {
        self.code = code
        self.reason = reason
    }

    public var description: String { "StorageError(\(code)): \(reason)" }
}
