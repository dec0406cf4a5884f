import ScoreboardCore
/// The one error type of the Redis module.
public struct RedisError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { name }

        /// Could not connect, or the connection broke (hiredis I/O, EOF or protocol error).
        public static let connection = Code(name: "connection")
        /// The server answered with an error reply (`-ERR …`, `-NOSCRIPT …`, `-WRONGTYPE …`).
        public static let server = Code(name: "server")
        /// The reply was not of the shape the caller asked for.
        public static let unexpectedReply = Code(name: "unexpectedReply")
        public static let configuration = Code(name: "configuration")
        public static let closed = Code(name: "closed")
    }

    public var code: Code
    /// hiredis's `REDIS_ERR_*` code for connection failures (`REDIS_ERR_IO` = 1, `REDIS_ERR_EOF` = 3, …).
    public var hiredisCode: Int32?
    public var reason: String

    public init(code: Code, hiredisCode: Int32? = nil, reason: String) {
        self.code = code
        self.hiredisCode = hiredisCode
        self.reason = reason
    }

    /// The first word of a server error reply: `NOSCRIPT`, `WRONGTYPE`, `ERR`, …
    public var serverErrorPrefix: String? {
        guard code == .server else { return nil }
        return reason.split(separator: " ", maxSplits: 1).first.map(String.init)
    }

    public var description: String {
        "RedisError(\(code))\(hiredisCode.map { " [hiredis \($0)]" } ?? ""): \(reason)"
    }
}

extension RedisError: ServerFailure {
    public var server: ServerKind { .redis }
}
