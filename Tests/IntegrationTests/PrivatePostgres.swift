import Foundation
import ScoreboardPostgres

/// A PostgreSQL cluster of its own on a free port, for the tests that stop and restart the server (never the shared
/// one). Made with `initdb` and run with `pg_ctl`, as the `postgres` user when the tests run as root (PostgreSQL
/// refuses to run as root), like `scripts/stack.sh up_postgres`.
final class PrivatePostgres: Sendable {
    let port: Int
    let dataDirectory: URL

    static let binaries = URL(
        fileURLWithPath: ProcessInfo.processInfo.environment["SCOREBOARD_PG_BIN"] ?? "/usr/lib/postgresql/15/bin")

    /// Creates and starts a new cluster (trust authentication, user `postgres`, database `postgres`).
    static func start() async throws -> PrivatePostgres {
        let id = UUID().uuidString.prefix(8).lowercased()
        // Under /tmp rather than the test's temporary directory: the postgres user must be able to reach it.
        let data = URL(fileURLWithPath: "/tmp/scoreboard-pg-\(id)")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        if getuid() == 0 { try FileManager.default.setAttributes([.ownerAccountName: "postgres"], ofItemAtPath: data.path) }
        try FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: data.path)
        let cluster = PrivatePostgres(port: try freeLoopbackPort(), dataDirectory: data)
        try await cluster.run("initdb", "-D", data.path, "-U", "postgres", "--auth=trust", "-E", "UTF8")
        try await cluster.start()
        return cluster
    }

    /// A cluster another process made (a child process of a test gets it from its environment).
    init(port: Int, dataDirectory: URL) {
        self.port = port
        self.dataDirectory = dataDirectory
    }

    var configuration: PostgresConfiguration {
        var configuration = PostgresConfiguration(host: "127.0.0.1", port: port, username: "postgres", password: nil, database: "postgres")
        configuration.schema = "public"
        return configuration
    }

    /// Starts the server and returns once it accepts connections.
    func start() async throws {
        try await run(
            "pg_ctl", "-D", dataDirectory.path, "-l", dataDirectory.appendingPathComponent("server.log").path, "-w", "-t", "60",
            "-o", "-c listen_addresses=127.0.0.1 -c port=\(port) -c unix_socket_directories='\(dataDirectory.path)' -c fsync=off",
            "start")
    }

    /// Stops the server in immediate mode: every backend quits at once, mid-result, as in a crash.
    func stopImmediately() async throws {
        try await run("pg_ctl", "-D", dataDirectory.path, "-m", "immediate", "-w", "stop")
    }

    /// Stops the server (if it runs) and deletes the cluster.
    func remove() async {
        if FileManager.default.fileExists(atPath: dataDirectory.appendingPathComponent("postmaster.pid").path) {
            try? await stopImmediately()
        }
        try? FileManager.default.removeItem(at: dataDirectory)
    }

    /// Runs one of PostgreSQL's programs to its end, as the postgres user when we are root.
    private func run(_ program: String, _ arguments: String...) async throws {
        let binary = Self.binaries.appendingPathComponent(program).path
        let command = getuid() == 0 ? ["/usr/sbin/runuser", "-u", "postgres", "--", binary] + arguments : [binary] + arguments
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("pg-\(program)-\(UUID().uuidString).log")
        defer { try? FileManager.default.removeItem(at: log) }
        let status = try await ChildProcess.run(command, output: log)
        guard status.reason == .exit, status.code == 0 else {
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            throw PrivatePostgresError(description: "\(program) \(arguments.joined(separator: " ")) ended with \(status): \(text)")
        }
    }
}

struct PrivatePostgresError: Error, CustomStringConvertible {
    var description: String
}

/// How a child process ended.
struct ChildProcess: CustomStringConvertible {
    enum Reason { case exit, signal }
    var reason: Reason
    /// The exit status, or the signal that ended it.
    var code: Int32

    var description: String { reason == .exit ? "exit \(code)" : "signal \(code)" }

    /// Runs `command` (an absolute path and its arguments) with stdout and stderr to `output`, and waits for its end.
    ///
    /// With `posix_spawn` and a `waitpid` poll rather than Foundation's `Process`: `pg_ctl start` leaves a server
    /// running that inherits every descriptor not closed on exec, and with `Process` that made the wait for pg_ctl
    /// hang, in a child process of these tests even with both cooperative threads stuck in `poll`. Here the program
    /// keeps no descriptor but stdin (`/dev/null`), stdout and stderr, and nothing blocks a thread.
    static func run(_ command: [String], environment: [String: String]? = nil, output: URL) async throws -> ChildProcess {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // Through a shell that closes every other inherited descriptor before it runs the program
        // (`posix_spawn_file_actions_addclosefrom_np` does not import into Swift).
        let closingOthers = ["/bin/bash", "-c", #"for fd in /proc/$$/fd/*; do n=${fd##*/}; if [ "$n" -gt 2 ] && [ -L "$fd" ]; then eval "exec $n>&-"; fi; done; exec "$@""#, "spawn"]
        let arguments = (closingOthers + command).map { strdup($0) } + [nil]
        let variables = (environment ?? ProcessInfo.processInfo.environment).map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (arguments + variables).forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, closingOthers[0], &actions, nil, arguments, variables)
        guard spawned == 0 else { throw POSIXError(POSIXErrorCode(rawValue: spawned) ?? .EINVAL) }
        var status: Int32 = 0
        while true {
            let reaped = waitpid(pid, &status, WNOHANG)
            if reaped == pid { break }
            if reaped < 0 && errno != EINTR { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .ECHILD) }
            // Not on cancellation: a program left running would outlive the test.
            try? await Task.sleep(for: .milliseconds(20))
        }
        let signal = status & 0x7f
        return signal == 0 ? ChildProcess(reason: .exit, code: (status >> 8) & 0xff) : ChildProcess(reason: .signal, code: signal)
    }
}
