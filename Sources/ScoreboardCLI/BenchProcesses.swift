import Foundation
import Hummingbird
import ScoreboardHTTP
import ScoreboardLoadgen
import Synchronization

/// Role processes a benchmark starts from this same executable, each in its own process as in production, on a
/// namespace, a PostgreSQL schema and a Redis database of the benchmark's own, and stops at the end.
final class BenchProcesses: Sendable {
    struct Started: Sendable {
        let process: Process
        let port: Int
        let name: String
    }

    let environment: [String: String]
    private let started = Mutex([Started]())

    /// - Parameters:
    ///   - namespace: the topic namespace (topics are applied by the caller before roles start).
    ///   - redisURL: the Redis URL with the benchmark's database.
    init(namespace: String, postgresSchema: String, redisURL: String) {
        var environment = ProcessInfo.processInfo.environment
        environment["SCOREBOARD_TOPIC_NAMESPACE"] = namespace
        environment["SCOREBOARD_POSTGRES_SCHEMA"] = postgresSchema
        environment["SCOREBOARD_REDIS_URL"] = redisURL
        environment["SCOREBOARD_WORKER_GROUP"] = "\(namespace)bench-workers"
        environment["SCOREBOARD_LOG_LEVEL"] = environment["SCOREBOARD_LOG_LEVEL"] ?? "warning"
        // A benchmark stopped by SIGKILL (or `timeout`) cannot stop its roles: they stop themselves.
        environment["SCOREBOARD_STOP_WITH_PARENT"] = "\(getpid())"
        self.environment = environment
    }

    /// Starts `scoreboard <arguments> --port 0` and returns once it listens and `/health/ready` answers 200.
    func start(_ name: String, _ arguments: [String], readyWithin: Duration = .seconds(60)) async throws -> Started {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        process.arguments = arguments + ["--port", "0"]
        process.environment = environment
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.standardError
        try process.run()
        // The role prints "<name> listening on http://host:port" once bound.
        let port = try await Self.listeningPort(output.fileHandleForReading, name: name, within: readyWithin)
        let role = Started(process: process, port: port, name: name)
        started.withLock { $0.append(role) }
        try await Self.waitReady(port: port, within: readyWithin)
        return role
    }

    /// SIGTERM to every started role, then waits for each to exit; one still running after `grace` gets SIGKILL (a
    /// role whose graceful shutdown hangs must not hang the benchmark).
    func stopAll(grace: Duration = .seconds(20)) async {
        let roles = started.withLock { roles -> [Started] in
            defer { roles = [] }
            return roles
        }
        for role in roles.reversed() where role.process.isRunning { role.process.terminate() }
        let deadline = ContinuousClock.now + grace
        for role in roles {
            while role.process.isRunning, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(50)) }
            if role.process.isRunning {
                FileHandle.standardError.write(Data("\(role.name) did not stop within \(grace) of SIGTERM: killed\n".utf8))
                kill(role.process.processIdentifier, SIGKILL)
            }
            role.process.waitUntilExit()
        }
    }

    /// Resident memory of a started role, in bytes (from /proc).
    static func residentBytes(of process: Process) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let kilobytes = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) }
            return kilobytes.map { $0 * 1024 }
        }
        return nil
    }

    private static func listeningPort(_ handle: FileHandle, name: String, within limit: Duration) async throws -> Int {
        try await withThrowingTaskGroup(of: Int.self) { group in
            group.addTask {
                // A blocking read: on a thread of its own, not the cooperative pool.
                try await withCheckedThrowingContinuation { continuation in
                    Thread {
                        var buffer = ""
                        while true {
                            let data = handle.availableData
                            guard !data.isEmpty else {
                                continuation.resume(throwing: BenchError("\(name) exited before it listened"))
                                return
                            }
                            buffer += String(decoding: data, as: UTF8.self)
                            if let line = buffer.split(separator: "\n").first(where: { $0.contains(" listening on http://") }),
                               let port = line.split(separator: ":").last.flatMap({ Int($0.trimmingCharacters(in: .whitespaces)) }) {
                                continuation.resume(returning: port)
                                return
                            }
                        }
                    }.start()
                }
            }
            group.addTask {
                try await Task.sleep(for: limit)
                throw BenchError("\(name) did not listen within \(limit)")
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
    }

    private static func waitReady(port: Int, within limit: Duration) async throws {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if (try? await LoadProbe.status(port: port, path: "/health/ready")) == 200 { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw BenchError("port \(port): /health/ready did not answer 200 within \(limit)")
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
