import Foundation
import Logging
import ScoreboardCLI
import ScoreboardCore
import ScoreboardDefinitions
import ScoreboardGateway
import ScoreboardHTTP
import ScoreboardKafka
import ScoreboardPostgres
import ScoreboardRedis
import PostgresNIO
import Synchronization
import Testing

/// The suites that start role processes run one after another: each starts servers and drives real traffic, and
/// on two cores, running them side by side would turn timing checks (a 503 within a second) into load tests.
@Suite(.serialized) enum ScorePath {}

/// The repository checkout and the `scoreboard` executable the test build produced beside the tests.
enum Repository {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// `scoreboard` next to the test bundle (`swift build --build-tests` builds it too), or the one
    /// `SCOREBOARD_ROLE_EXECUTABLE` names: `scripts/chaos.sh --release` runs the roles from a release build, because
    /// the full-mode runs need their speed (debug roles managed about 350 events/s of the 900 asked).
    static var executable: URL {
        if let path = ProcessInfo.processInfo.environment["SCOREBOARD_ROLE_EXECUTABLE"], !path.isEmpty {
            return URL(fileURLWithPath: path)
        }
        var directory = Bundle.main.bundleURL
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("scoreboard")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            directory.deleteLastPathComponent()
        }
        return root.appendingPathComponent(".build/debug/scoreboard")
    }

    /// The test process's environment with `overrides`, and `SCOREBOARD_HOME` at this checkout.
    static func environment(_ overrides: [String: String]) -> [String: String] {
        var merged = ProcessInfo.processInfo.environment
        merged.merge(overrides) { _, new in new }
        merged["SCOREBOARD_HOME"] = root.path
        // A test run that is killed cannot stop its roles: they stop themselves when it is gone.
        merged["SCOREBOARD_STOP_WITH_PARENT"] = merged["SCOREBOARD_STOP_WITH_PARENT"] ?? "\(getpid())"
        return merged
    }
}

/// One role (`gateway`, `worker`, `push`) as a real process of the real executable.
final class RoleProcess: @unchecked Sendable {
    let role: String
    private let process = Process()
    private let lines = OutputLines()

    final class OutputLines: Sendable {
        let value = Mutex<[String]>([])
        func append(_ line: String) { value.withLock { $0.append(line) } }
        var all: [String] { value.withLock { $0 } }
    }
    let port: Int

    /// Starts the role with `--port 0` and waits until it says which port it listens on.
    /// - Parameter acceptsSIGTERM: start through a tiny launcher that unblocks SIGTERM before `exec` (a child of
    ///   Foundation's `Process` inherits the spawning thread's blocked mask), for tests of graceful shutdown.
    init(_ role: String, arguments: [String] = [], environment: [String: String], acceptsSIGTERM: Bool = false) async throws {
        self.role = role
        if acceptsSIGTERM {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [
                "python3", "-c",
                "import os, signal, sys; signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT}); os.execv(sys.argv[1], sys.argv[1:])",
                Repository.executable.path, role, "--port", "0",
            ] + arguments
        } else {
            process.executableURL = Repository.executable
            process.arguments = [role, "--port", "0"] + arguments
        }
        process.environment = Repository.environment(environment)
        let output = Pipe()
        process.standardOutput = output
        let errors = FileHandle(forWritingAtPath: "/dev/null")
        process.standardError = ProcessInfo.processInfo.environment["SCOREBOARD_TEST_ROLE_LOGS"] == nil ? errors : FileHandle.standardError
        try process.run()
        let found = AsyncStream<Int>.makeStream()
        let lines = self.lines
        output.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            if data.isEmpty {
                handle.readabilityHandler = nil
                found.continuation.finish()
                return
            }
            for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
                lines.append(String(line))
                if line.contains(" listening on http://"), let port = Int(line.split(separator: ":").last ?? "") {
                    found.continuation.yield(port)
                }
            }
        }
        var port: Int?
        let stream = found.stream
        port = try await within(.seconds(60)) {
            for await port in stream { return port }
            return nil
        }
        guard let port else { throw RoleExited(role: role, output: lines.all) }
        self.port = port
    }

    struct RoleExited: Error, CustomStringConvertible {
        var role: String
        var output: [String]
        var description: String { "\(role) exited before listening: \(output.joined(separator: "\n"))" }
    }

    var isRunning: Bool { process.isRunning }

    /// SIGTERM, then waits for the exit; returns the exit status.
    func terminate(within limit: Duration) async throws -> Int32 {
        Foundation.kill(process.processIdentifier, SIGTERM)
        let process = self.process
        try await within(limit) {
            while process.isRunning { try await Task.sleep(for: .milliseconds(20)) }
        }
        return process.terminationStatus
    }

    /// Kills the role as a crash would (``killAndWait(_:)``).
    func kill() { killAndWait(process) }

    deinit { kill() }
}

/// SIGKILL: no graceful shutdown, as a crash. (SIGTERM would not reach a child spawned from a Dispatch thread,
/// which inherits its blocked signal mask.)
func killAndWait(_ process: Process) {
    guard process.isRunning else { return }
    kill(process.processIdentifier, SIGKILL)
    process.waitUntilExit()
}

/// An isolated world for one score-path test: its own topics (a namespace), PostgreSQL schema, Redis database and
/// keys; and the roles started against it.
final class ScorePathWorld: TestFixture, @unchecked Sendable {
    let namespace: String
    let schema: String
    let redisDatabase: Int
    let keysDirectory: URL
    let kafkaBrokers: String
    let jwks: JWKSFile
    let redis: RedisConnectionPool
    let catalog: PipelineCatalog

    init(redisDatabase: Int, kafkaBrokers: String? = nil) async throws {
        let id = UUID().uuidString.prefix(8).lowercased()
        namespace = "t\(id)."
        schema = "t_\(id)"
        self.redisDatabase = redisDatabase
        self.kafkaBrokers = kafkaBrokers ?? TestEnvironment.settings.kafkaBrokers.joined(separator: ",")
        keysDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("scoreboard-keys-\(id)")
        try FileManager.default.createDirectory(at: keysDirectory, withIntermediateDirectories: true)
        try Data(JWKSFile.makeLocal(kid: "test-hs-1").utf8).write(to: keysDirectory.appendingPathComponent("jwks.json"))
        try Data(ActionTokenKeys.makeLocal(kid: "test-a1").utf8).write(to: keysDirectory.appendingPathComponent("action-keys.json"))
        jwks = try JWKSFile.load(path: keysDirectory.appendingPathComponent("jwks.json").path)
        var redisConfiguration = TestEnvironment.settings.redis
        redisConfiguration.database = redisDatabase
        redis = RedisConnectionPool(configuration: redisConfiguration, logger: TestEnvironment.logger)
        try await redis.send(["FLUSHDB"])
        catalog = try PipelineCatalog.load(directory: Repository.root.appendingPathComponent("pipelines"))

        // The topics, as `topics apply` creates them, under this world's namespace.
        let topics = try TopicCatalog.load(directory: Repository.root.appendingPathComponent("topics")).namespaced(namespace)
        var client = KafkaClientConfiguration(bootstrapServers: [self.kafkaBrokers])
        client.socketTimeout = .seconds(5)
        _ = try await TopicsApplier(admin: try KafkaAdminClient(configuration: client, logger: TestEnvironment.logger)).apply(topics)
    }

    var environment: [String: String] {
        var redisURL = "redis://\(TestEnvironment.settings.redis.host):\(TestEnvironment.settings.redis.port)/\(redisDatabase)"
        if let password = TestEnvironment.settings.redis.password { redisURL = "redis://:\(password)@\(TestEnvironment.settings.redis.host):\(TestEnvironment.settings.redis.port)/\(redisDatabase)" }
        return [
            "SCOREBOARD_KAFKA_BROKERS": kafkaBrokers,
            "SCOREBOARD_TOPIC_NAMESPACE": namespace,
            "SCOREBOARD_POSTGRES_SCHEMA": schema,
            "SCOREBOARD_REDIS_URL": redisURL,
            "SCOREBOARD_KAFKA_SESSION_TIMEOUT_MS": "3000",
            "SCOREBOARD_JWKS_FILE": keysDirectory.appendingPathComponent("jwks.json").path,
            "SCOREBOARD_ACTION_TOKEN_KEYS": keysDirectory.appendingPathComponent("action-keys.json").path,
            "SCOREBOARD_WORKER_GROUP": "workers-\(namespace)",
        ]
    }

    func start(_ role: String, arguments: [String] = []) async throws -> RoleProcess {
        try await RoleProcess(role, arguments: arguments, environment: environment)
    }

    func gateway() async throws -> RoleProcess {
        // The tests' traffic is denser than a player's and replays and forges tokens on purpose: the fraud flags it
        // raises must not throttle it (FraudLivePathTests starts a gateway with the adaptive limit).
        try await start("gateway", arguments: ["--per-ip-per-minute", "1000000", "--per-user-per-minute", "1000", "--per-flagged-user-per-minute", "1000"])
    }

    /// A bearer token for `user`.
    func token(_ user: String, role: Role = .player, region: String? = nil, guild: String? = nil, expiresIn: TimeInterval = 3600) async throws -> String {
        let now = Date()
        let claims = ScoreboardClaims(
            subject: user, role: role, region: region, guild: guild, issuer: "scoreboard", audience: "scoreboard", issuedAt: now,
            expiresAt: now.addingTimeInterval(expiresIn))
        return try await JWTAuthenticator.sign(claims, keys: try await jwks.keyCollection(), kid: "test-hs-1")
    }

    /// Every score of a board in Redis.
    func redisBoard(_ board: BoardKey) async throws -> [String: Int64] {
        let reply = try await redis.send(["ZRANGE", board.redisKey, "0", "-1", "WITHSCORES"])
        let items = reply.array ?? []
        var scores: [String: Int64] = [:]
        for index in stride(from: 0, to: items.count - 1, by: 2) {
            scores[items[index].string!] = Int64(Double(items[index + 1].string!)!)
        }
        return scores
    }

    /// Drops what the world created in PostgreSQL and Redis (topics go with the broker's memory).
    func tearDown() async {
        _ = try? await redis.send(["FLUSHDB"])
        redis.close()
        let store = ScoreboardPostgres.PostgresStore(configuration: TestEnvironment.settings.postgres, logger: TestEnvironment.logger)
        let schema = self.schema
        _ = try? await store.withRunningClient { store in
            try await store.client.query("DROP SCHEMA IF EXISTS \(unescaped: schema) CASCADE")
        }
        try? FileManager.default.removeItem(at: keysDirectory)
    }
}

/// Runs `body` in a fresh world and tears it down afterwards, awaited, whether `body` succeeded or threw.
/// - Parameter kafkaBrokers: a private broker instead of the shared one.
func withScorePathWorld<T>(redisDatabase: Int, kafkaBrokers: String? = nil, _ body: (ScorePathWorld) async throws -> T) async throws -> T {
    try await using(try await ScorePathWorld(redisDatabase: redisDatabase, kafkaBrokers: kafkaBrokers), body)
}
