import Foundation
import ScoreboardRedis
import Testing

@Suite(.timeLimit(.minutes(2)))
struct RedisTests {
    let pool = RedisConnectionPool(configuration: TestEnvironment.settings.redis, logger: TestEnvironment.logger)

    @Test func tenThousandPipelinedCommandsInOneRoundTrip() async throws {
        let prefix = TestEnvironment.uniqueName("pipe")
        let sets = (0..<10_000).map { ["SET", "\(prefix):\($0)", "value-\($0)", "EX", "60"] }
        let setReplies = try await pool.pipeline(sets)
        #expect(setReplies.count == 10_000)
        #expect(setReplies.allSatisfy { $0 == .status("OK") })
        let getReplies = try await pool.pipeline((0..<10_000).map { ["GET", "\(prefix):\($0)"] })
        #expect(getReplies.enumerated().allSatisfy { $0.element.string == "value-\($0.offset)" })
        // A failing command keeps its place in the replies and does not hide the others.
        let mixed = try await pool.pipeline([["SET", "\(prefix):x", "1"], ["INCRBY", "\(prefix):x", "notanumber"], ["GET", "\(prefix):x"]])
        #expect(mixed[0] == .status("OK"))
        if case .error(let message) = mixed[1] { #expect(message.hasPrefix("ERR")) } else { Issue.record("expected an error reply") }
        #expect(mixed[2].string == "1")
    }

    @Test func binarySafeValuesAndServerErrors() async throws {
        let key = TestEnvironment.uniqueName("bin")
        let value = String(decoding: [0x61, 0x00, 0x62], as: UTF8.self)
        try await pool.send(["SET", key, value, "EX", "60"])
        #expect(try await pool.send(["STRLEN", key]).integer == 3)
        let error = await #expect(throws: RedisError.self) { try await pool.send(["LPUSH", key, "x"]) }
        #expect(error?.serverErrorPrefix == "WRONGTYPE")
        // The connection is still usable after a server error.
        #expect(try await pool.send(["PING"]) == .status("PONG"))
    }

    @Test func scriptsRunBySHAAndReloadAfterTheCacheIsFlushed() async throws {
        let script = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        let key = TestEnvironment.uniqueName("script")
        #expect(try await pool.run(script, keys: [key], arguments: ["5"]).integer == 5)
        try await pool.send(["SCRIPT", "FLUSH"])
        #expect(try await pool.send(["SCRIPT", "EXISTS", script.sha1]).array == [.integer(0)])
        #expect(try await pool.run(script, keys: [key], arguments: ["2"]).integer == 7)
        #expect(try await pool.send(["SCRIPT", "EXISTS", script.sha1]).array == [.integer(1)])
        try await pool.send(["DEL", key])
    }

    @Test func publishAndSubscribeRoundTrip() async throws {
        let channel = TestEnvironment.uniqueName("channel")
        let messages = try await RedisSubscriber.subscribe(channels: [channel], configuration: TestEnvironment.settings.redis, logger: TestEnvironment.logger)
        for index in 0..<3 {
            #expect(try await pool.send(["PUBLISH", channel, "hello-\(index)"]).integer == 1)
        }
        let received = try await within(.seconds(10)) {
            var received: [String] = []
            for try await message in messages {
                #expect(message.channel == channel)
                received.append(message.text)
                if received.count == 3 { break }
            }
            return received
        }
        #expect(received == ["hello-0", "hello-1", "hello-2"])
    }

    @Test func manyConcurrentCallersShareABoundedPool() async throws {
        var configuration = TestEnvironment.settings.redis
        configuration.maximumConnections = 3
        let small = RedisConnectionPool(configuration: configuration, logger: TestEnvironment.logger)
        let key = TestEnvironment.uniqueName("count")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<200 { group.addTask { try await small.send(["INCR", key]) } }
            try await group.waitForAll()
        }
        #expect(try await small.send(["GET", key]).integer == 200)
        let clients = try await small.send(["CLIENT", "LIST"]).string ?? ""
        #expect(clients.split(separator: "\n").count >= 1)
        try await small.send(["DEL", key])
        small.close()
        await #expect(throws: RedisError.self) { try await small.send(["PING"]) }
    }

    @Test func poolRecoversAfterTheServerRestarts() async throws {
        let server = try RedisServerProcess()
        defer { server.stop() }
        var configuration = RedisConfiguration(host: "127.0.0.1", port: server.port)
        configuration.maximumConnections = 2
        let pool = RedisConnectionPool(configuration: configuration, logger: TestEnvironment.logger)
        let script = RedisScript("return 'script-ok'")
        #expect(try await pool.send(["SET", "before", "1"]) == .status("OK"))
        #expect(try await pool.run(script, keys: [], arguments: []).string == "script-ok")

        try server.restart()

        // The idle connection now points at a closed socket: the pool notices and connects afresh, and the script
        // cache of the new server is empty, so EVALSHA's NOSCRIPT makes the pool load it again.
        #expect(try await pool.send(["PING"]) == .status("PONG"))
        #expect(try await pool.send(["GET", "before"]) == .null)  // the restarted server kept nothing
        #expect(try await pool.run(script, keys: [], arguments: []).string == "script-ok")
        pool.close()
    }

    @Test func unreachableServerIsAConnectionError() async throws {
        var configuration = RedisConfiguration(host: "127.0.0.1", port: try freeLoopbackPort())
        configuration.connectTimeout = .seconds(1)
        let pool = RedisConnectionPool(configuration: configuration, logger: TestEnvironment.logger)
        let error = await #expect(throws: RedisError.self) { try await pool.send(["PING"]) }
        #expect(error?.code == .connection)
    }
}

/// A redis-server of the test's own, on a free port, that can be restarted. Readiness is awaited by reading the
/// server's own "Ready to accept connections" line, not by sleeping.
final class RedisServerProcess: @unchecked Sendable {
    let port: Int
    private var process: Process?

    init() throws {
        port = try freeLoopbackPort()
        try start()
    }

    private func start() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        process.arguments = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        self.process = process
        let handle = output.fileHandleForReading
        var seen = Data()
        while !String(decoding: seen, as: UTF8.self).contains("Ready to accept connections") {
            let chunk = handle.availableData  // blocks until the server writes or exits
            if chunk.isEmpty { throw RedisError(code: .connection, reason: "redis-server exited: \(String(decoding: seen, as: UTF8.self))") }
            seen.append(chunk)
        }
        // Stop reading: redis-server ignores SIGPIPE, so its later log lines are simply dropped.
        try? handle.close()
    }

    func restart() throws {
        stop()
        try start()
    }

    /// Kills the server outright. (SIGTERM would not do: a child spawned from a Dispatch thread inherits its
    /// blocked signal mask, SIGTERM included.)
    func stop() {
        guard let process, process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}
