/// Where Redis is and how the client uses it.
public struct RedisConfiguration: Sendable, Hashable {
    public var host: String
    public var port: Int
    public var password: String?
    public var database: Int = 0
    public var connectTimeout: Duration = .seconds(2)
    /// Bound on one blocking read or write: a thread blocked in C ignores task cancellation, so this is what stops it.
    public var commandTimeout: Duration = .seconds(5)
    /// Connections the pool opens at most; callers beyond that wait for one to be returned.
    public var maximumConnections: Int = 8

    public init(host: String = "127.0.0.1", port: Int = 6379, password: String? = nil, database: Int = 0) {
        self.host = host
        self.port = port
        self.password = password
        self.database = database
    }

    /// Reads `redis://[:password@]host[:port][/database]`.
    /// - Throws: ``RedisError`` with code `configuration` for anything else.
    public init(url: String) throws {
        guard url.hasPrefix("redis://") else {
            throw RedisError(code: .configuration, reason: "a Redis URL starts with redis:// (got \(url.prefix(40)))")
        }
        var rest = Substring(url.dropFirst("redis://".count))
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            password = credentials.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).last.map(String.init)
            if password?.isEmpty == true { password = nil }
            rest = rest[rest.index(after: at)...]
        }
        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let path = rest[rest.index(after: slash)...]
            if !path.isEmpty {
                guard let number = Int(path), number >= 0 else {
                    throw RedisError(code: .configuration, reason: "the database in a Redis URL is a number (got \(path))")
                }
                database = number
            }
            rest = rest[..<slash]
        }
        var host = String(rest)
        var port = 6379
        if let colon = rest.lastIndex(of: ":") {
            guard let number = Int(rest[rest.index(after: colon)...]), (1...65535).contains(number) else {
                throw RedisError(code: .configuration, reason: "the port in a Redis URL is a number from 1 to 65535")
            }
            port = number
            host = String(rest[..<colon])
        }
        guard !host.isEmpty else { throw RedisError(code: .configuration, reason: "a Redis URL names a host") }
        self.init(host: host, port: port, password: password, database: database)
    }
}
