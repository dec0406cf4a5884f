import Foundation
import Testing

/// One short run of each benchmark command and of the load generator, so that they keep working. Nothing here is
/// timed: the figures are for docs/benchmarks.md, measured on a release build, not for pass or fail.
@Suite(.serialized, .timeLimit(.minutes(5)))
struct BenchSmokeTests {
    /// A Redis database of their own (the benchmarks flush it) and the stack's other settings.
    static let environment = Repository.environment(["SCOREBOARD_LOG_LEVEL": "warning"])
    static let common = ["--repetitions", "1", "--redis-database", "30"]

    func run(_ arguments: [String], expecting markers: [String]) async throws {
        let (status, output) = try await runCommand(Repository.executable.path, arguments, environment: Self.environment)
        #expect(status == 0, "scoreboard \(arguments.joined(separator: " ")) exited \(status):\n\(output.suffix(3_000))")
        for marker in markers { #expect(output.contains(marker), "no '\(marker)' in the output of \(arguments.prefix(2)):\n\(output.suffix(3_000))") }
    }

    @Test func benchIngest() async throws {
        try await run(
            ["bench", "ingest", "--seconds", "1", "--player-rate", "20", "--connections", "2"] + Self.common,
            expecting: ["batch ingest, 1000-item batches", "baseline", "ratio", "player p99"])
    }

    @Test func benchLatency() async throws {
        try await run(
            ["bench", "latency", "--seconds", "2", "--rate", "20", "--batch-size", "5", "--subscribers", "1"] + Self.common,
            expecting: ["202 → SSE update p99"])
    }

    @Test func benchQueries() async throws {
        try await run(
            ["bench", "queries", "--seconds", "1", "--connections", "2", "--users", "100", "--fill-rate", "100", "--fill-seconds", "1"] + Self.common,
            expecting: ["top", "around", "standing", "ratio"])
    }

    @Test func benchFanout() async throws {
        try await run(
            ["bench", "fanout", "--subscribers", "10", "--seconds", "2", "--rate", "5", "--redis-database", "30"],
            expecting: ["10 subscribers:", "update to all"])
    }

    @Test func benchScale() async throws {
        try await run(
            ["bench", "scale", "--workers", "1", "2", "--push-gateways", "2", "--events", "300", "--users", "50", "--subscribers", "2",
             "--rate", "20", "--seconds", "2"] + Self.common,
            expecting: ["1 worker(s)", "2 worker(s)", "CPU per 1k events", "2 push gateway(s) 202 → update p99"])
    }

    /// The load generator against the bare server: every request answered, a summary and JSON.
    @Test func loadgenAgainstTheBaselineServer() async throws {
        let port = try freeLoopbackPort()
        let server = ServerProcess()
        try server.launch(Repository.executable.path, ["bench", "baseline-server", "--port", String(port)])
        defer { server.kill() }
        try await within(.seconds(30)) { while !acceptsConnections(port: port) { try await Task.sleep(for: .milliseconds(50)) } }
        let (status, json) = try await runCommand(
            Repository.executable.path,
            ["loadgen", "--gateway", "http://127.0.0.1:\(port)", "--rate", "200", "--duration", "1", "--batch-size", "1", "--json"],
            environment: Self.environment)
        #expect(status == 0, "\(json)")
        let report = try JSONSerialization.jsonObject(with: Data(json.utf8.drop { $0 != UInt8(ascii: "{") })) as? [String: Any]
        #expect((report?["requests"] as? Int ?? 0) >= 150, "\(json)")
        #expect((report?["statuses"] as? [String: Int])?["202"] == report?["requests"] as? Int, "\(json)")
    }
}
