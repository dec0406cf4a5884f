import CHiredis

/// A Redis reply, copied out of hiredis's memory.
public enum RedisReply: Sendable, Hashable {
    case status(String)
    case error(String)
    case integer(Int64)
    case bulk([UInt8])
    case null
    case array([RedisReply])

    /// Copies a hiredis reply tree into Swift values. Does not free it.
    init(copying reply: UnsafePointer<redisReply>) {
        let pointee = reply.pointee
        switch pointee.type {
        case REDIS_REPLY_STATUS:
            self = .status(Self.text(pointee))
        case REDIS_REPLY_ERROR:
            self = .error(Self.text(pointee))
        case REDIS_REPLY_INTEGER:
            self = .integer(Int64(pointee.integer))
        case REDIS_REPLY_STRING:
            self = .bulk(pointee.str.map { Array(UnsafeRawBufferPointer(start: $0, count: pointee.len)) } ?? [])
        case REDIS_REPLY_ARRAY:
            self = .array((0..<pointee.elements).map { RedisReply(copying: pointee.element[$0]!) })
        default:
            self = .null
        }
    }

    private static func text(_ reply: redisReply) -> String {
        guard let str = reply.str else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: str, count: reply.len), as: UTF8.self)
    }

    // MARK: - Typed accessors

    /// The reply as text: a bulk string decoded as UTF-8, or a status. `nil` for a null reply.
    public var string: String? {
        switch self {
        case .bulk(let bytes): return String(decoding: bytes, as: UTF8.self)
        case .status(let text): return text
        case .integer(let value): return String(value)
        default: return nil
        }
    }

    public var integer: Int64? {
        switch self {
        case .integer(let value): return value
        case .bulk(let bytes): return Int64(String(decoding: bytes, as: UTF8.self))
        default: return nil
        }
    }

    public var double: Double? {
        switch self {
        case .bulk(let bytes): return Double(String(decoding: bytes, as: UTF8.self))
        case .integer(let value): return Double(value)
        default: return nil
        }
    }

    public var array: [RedisReply]? {
        if case .array(let values) = self { return values }
        return nil
    }

    public var isNull: Bool { self == .null }

    /// Throws the server's error reply as a ``RedisError``; returns any other reply unchanged.
    @discardableResult
    public func throwingServerError() throws -> RedisReply {
        if case .error(let message) = self { throw RedisError(code: .server, reason: message) }
        return self
    }
}
