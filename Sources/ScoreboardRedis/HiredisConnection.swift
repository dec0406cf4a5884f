import CHiredis
import Dispatch
import Foundation

/// One hiredis connection. Every call runs on `queue`; that confinement is what makes `@unchecked Sendable` sound,
/// since a `redisContext` is not thread-safe. Blocking reads and writes are bounded by `redisSetTimeout`.
final class HiredisConnection: @unchecked Sendable {
    private let context: UnsafeMutablePointer<redisContext>
    private let queue: DispatchQueue
    /// Set (on `queue`) once hiredis reported an error: hiredis contexts cannot be used after one.
    private var isBroken = false

    private init(context: UnsafeMutablePointer<redisContext>, queue: DispatchQueue) {
        self.context = context
        self.queue = queue
    }

    deinit {
        redisFree(context)
    }

    /// Connects (on a queue of its own, since connecting blocks), authenticates and selects the database.
    static func connect(_ configuration: RedisConfiguration, label: String = "scoreboard.redis.connection") async throws -> HiredisConnection {
        let queue = DispatchQueue(label: label)
        return try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(with: Result { try connectOnQueue(configuration, queue: queue) })
            }
        }
    }

    /// Connects on the calling thread, which must be the one that will own the connection.
    static func connectOnQueue(_ configuration: RedisConfiguration, queue: DispatchQueue) throws -> HiredisConnection {
        guard let context = redisConnectWithTimeout(configuration.host, Int32(configuration.port), timeval(configuration.connectTimeout)) else {
            throw RedisError(code: .connection, reason: "hiredis could not allocate a context")
        }
        if context.pointee.err != 0 {
            let error = RedisError(code: .connection, hiredisCode: context.pointee.err,
                                   reason: "connect to \(configuration.host):\(configuration.port): \(errorString(context))")
            redisFree(context)
            throw error
        }
        let connection = HiredisConnection(context: context, queue: queue)
        _ = redisSetTimeout(context, timeval(configuration.commandTimeout))
        _ = redisEnableKeepAlive(context)
        if let password = configuration.password {
            try connection.commandOnQueue(["AUTH", password]).throwingServerError()
        }
        if configuration.database != 0 {
            try connection.commandOnQueue(["SELECT", String(configuration.database)]).throwingServerError()
        }
        return connection
    }

    // MARK: - Commands

    /// Sends one command and waits for its reply. A server error comes back as `.error`, not thrown.
    /// - Throws: ``RedisError`` with code `connection` when the connection broke.
    func send(_ command: [String]) async throws -> RedisReply {
        try await onQueue { try self.commandOnQueue(command) }
    }

    /// Sends all commands, then reads all replies: one round trip for the lot.
    func pipeline(_ commands: [[String]]) async throws -> [RedisReply] {
        try await onQueue { try self.pipelineOnQueue(commands) }
    }

    /// Whether the connection can be lent out: no earlier error, and nothing unexpected to read (which, on an idle
    /// connection, means the server closed it: for example it was restarted).
    func isUsable() async -> Bool {
        (try? await onQueue { self.isUsableOnQueue() }) ?? false
    }

    private func onQueue<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: Result { try body() }) }
        }
    }

    func commandOnQueue(_ command: [String]) throws -> RedisReply {
        try checkNotBroken()
        let raw = Self.withArgv(command) { argc, argv, lengths in redisCommandArgv(context, argc, argv, lengths) }
        guard let raw else { throw brokenError() }
        defer { freeReplyObject(raw) }
        return RedisReply(copying: raw.assumingMemoryBound(to: redisReply.self))
    }

    func pipelineOnQueue(_ commands: [[String]]) throws -> [RedisReply] {
        try checkNotBroken()
        for command in commands {
            let status = Self.withArgv(command) { argc, argv, lengths in redisAppendCommandArgv(context, argc, argv, lengths) }
            if status != REDIS_OK { throw brokenError() }
        }
        var replies: [RedisReply] = []
        replies.reserveCapacity(commands.count)
        for _ in commands {
            var raw: UnsafeMutableRawPointer?
            if redisGetReply(context, &raw) != REDIS_OK || raw == nil { throw brokenError() }
            replies.append(RedisReply(copying: raw!.assumingMemoryBound(to: redisReply.self)))
            freeReplyObject(raw)
        }
        return replies
    }

    /// Writes a command without waiting for its reply (pub/sub subscriptions).
    func writeOnQueue(_ command: [String]) throws {
        try checkNotBroken()
        let status = Self.withArgv(command) { argc, argv, lengths in redisAppendCommandArgv(context, argc, argv, lengths) }
        if status != REDIS_OK { throw brokenError() }
        var done: Int32 = 0
        while done == 0 {
            if redisBufferWrite(context, &done) != REDIS_OK { throw brokenError() }
        }
    }

    /// Reads the next reply, waiting at most `timeout` for data. `nil` when none arrived in time; the connection
    /// stays usable then (unlike a hiredis read timeout, which breaks the context).
    func readReplyOnQueue(timeout: Duration) throws -> RedisReply? {
        try checkNotBroken()
        for attempt in 0..<2 {
            var raw: UnsafeMutableRawPointer?
            if redisGetReplyFromReader(context, &raw) != REDIS_OK { throw brokenError() }
            if let raw {
                defer { freeReplyObject(raw) }
                return RedisReply(copying: raw.assumingMemoryBound(to: redisReply.self))
            }
            if attempt == 1 { return nil }
            var descriptor = pollfd(fd: context.pointee.fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, Int32(timeout.wholeMilliseconds))
            if ready == 0 { return nil }
            if ready < 0 { if errno == EINTR { return nil }; throw brokenError() }
            if redisBufferRead(context) != REDIS_OK { throw brokenError() }
        }
        return nil
    }

    private func isUsableOnQueue() -> Bool {
        guard !isBroken, context.pointee.err == 0 else { return false }
        var descriptor = pollfd(fd: context.pointee.fd, events: Int16(POLLIN), revents: 0)
        // Readable while idle means EOF (or a reply nobody asked for): either way, not safe to reuse.
        return poll(&descriptor, 1, 0) == 0
    }

    private func checkNotBroken() throws {
        if isBroken || context.pointee.err != 0 { isBroken = true; throw brokenError() }
    }

    private func brokenError() -> RedisError {
        isBroken = true
        return RedisError(code: .connection, hiredisCode: context.pointee.err, reason: Self.errorString(context))
    }

    private static func errorString(_ context: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: context.pointee.errstr) { bytes in
            String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    /// Lends hiredis an argv/argvlen pair for the command: all arguments packed in one buffer, lengths explicit
    /// (binary safe, no NUL terminators needed).
    private static func withArgv<T>(
        _ command: [String], _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> T
    ) -> T {
        var bytes: [UInt8] = []
        var offsets: [Int] = []
        var lengths: [Int] = []
        offsets.reserveCapacity(command.count)
        lengths.reserveCapacity(command.count)
        for argument in command {
            offsets.append(bytes.count)
            let before = bytes.count
            bytes.append(contentsOf: argument.utf8)
            lengths.append(bytes.count - before)
        }
        bytes.append(0)  // never empty, so the base address exists
        return bytes.withUnsafeBufferPointer { buffer in
            let base = UnsafeRawPointer(buffer.baseAddress!).assumingMemoryBound(to: CChar.self)
            var argv: [UnsafePointer<CChar>?] = offsets.map { base + $0 }
            return argv.withUnsafeMutableBufferPointer { argv in
                lengths.withUnsafeBufferPointer { lengths in
                    body(Int32(command.count), argv.baseAddress!, lengths.baseAddress!)
                }
            }
        }
    }
}

func timeval(_ duration: Duration) -> timeval {
    let (seconds, attoseconds) = duration.components
    return Foundation.timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
}

extension Duration {
    /// Whole milliseconds, for `poll(2)` and Dispatch deadlines.
    var wholeMilliseconds: Int {
        let (seconds, attoseconds) = components
        return Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
    }
}
