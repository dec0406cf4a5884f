import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Hummingbird
import Logging
import NIOCore
import ScoreboardCore
import ScoreboardDefinitions
import ScoreboardHTTP
import ScoreboardKafka
import ScoreboardLoadgen
import ScoreboardPostgres
import ScoreboardPush
import ScoreboardRedis

/// The benchmarks of the HTTP paths (`scoreboard bench ingest|latency|queries|fanout`): each starts the roles it
/// measures as their own processes on a namespace, schema and Redis database of its own, drives them with the load
/// generator, and measures a bare Hummingbird server (`scoreboard bench baseline-server`) in the same run, so that
/// figures come as ratios to what this machine does at all. Medians of the repetitions.
struct HTTPBenchmark: Sendable {
    let connection: ConnectionSettings
    let auth: AuthSettings
    let redisDatabase: Int
    let log: @Sendable (String) -> Void

    /// A fresh stack: topics in a new namespace, the `bench` schema and the Redis database emptied.
    func withStack<T: Sendable>(_ body: (BenchProcesses, String) async throws -> T) async throws -> T {
        // The roles and the token minting read the local keys, as `scoreboard dev` does: a fresh clone has none yet
        // (only missing files are written; existing keys are kept).
        _ = try LocalKeys.ensure(in: DefinitionsLocation.root().appendingPathComponent(".local/dev"))
        let runID = String(UUID().uuidString.prefix(6)).lowercased()
        let namespace = "bench-\(runID)-"
        let logger = makeLogger("scoreboard.bench")
        var redisConfiguration = connection.redis
        redisConfiguration.database = redisDatabase
        let redis = RedisConnectionPool(configuration: redisConfiguration, logger: logger)
        defer { redis.close() }
        _ = try await redis.send(["FLUSHDB"])
        let store = PostgresStore(configuration: connection.postgres, logger: logger)
        try await store.withRunningClient { store in
            _ = try await store.client.queryRows("DROP SCHEMA IF EXISTS bench CASCADE", logger: logger)
        }
        let catalog = try TopicCatalog.load(directory: DefinitionsLocation.root().appendingPathComponent("topics")).namespaced(namespace)
        _ = try await TopicsApplier(admin: try KafkaAdminClient(configuration: connection.kafkaClient, logger: logger)).apply(catalog)
        let redisURL = "redis://" + (redisConfiguration.password.map { ":\($0)@" } ?? "")
            + "\(redisConfiguration.host):\(redisConfiguration.port)/\(redisDatabase)"
        let processes = BenchProcesses(namespace: namespace, postgresSchema: "bench", redisURL: redisURL)
        do {
            let result = try await body(processes, runID)
            await processes.stopAll()
            return result
        } catch {
            await processes.stopAll()
            throw error
        }
    }

    /// Roles started with limits that let throughput, not 429s, show.
    static let gatewayArguments = ["gateway", "--per-ip-per-minute", "1000000000", "--per-user-per-minute", "1000000000",
                                   "--action-tokens-per-user-per-minute", "1000000000", "--per-flagged-user-per-minute", "1000000000"]

    /// Runs one load phase and prints what it cost in CPU per 1,000 units (accepted events by default) for each
    /// part: the given role processes, the load generator (this process) and the stack's servers (``BenchCPU``).
    func withCPU(
        _ roles: [BenchProcesses.Started], unit: String = "events", units: @Sendable (LoadReport) -> Double = { Double($0.acceptedEvents) },
        _ phase: () async throws -> LoadReport
    ) async throws -> LoadReport {
        var processes = Dictionary(roles.map { ($0.name, $0.process.processIdentifier) }, uniquingKeysWith: { first, _ in first })
        processes["load generator"] = getpid()
        let before = BenchCPU.sample(processes)
        let report = try await phase()
        print("    " + before.cost(until: BenchCPU.sample(processes), units: units(report)).line(unit: unit))
        return report
    }

    func load(
        _ path: LoadConfiguration.Path, gateway: Int, push: Int? = nil, runID: String, rate: Double = 0, seconds: Double, connections: Int,
        batchSize: Int = 100, users: Int = 10_000, zipf: Double = 1.1, subscribers: Int = 0, drain: Double = 10
    ) async throws -> LoadReport {
        let actions = try PipelineCatalog.load(directory: DefinitionsLocation.root().appendingPathComponent("pipelines")).actions.actions.keys.sorted()
        var configuration = LoadConfiguration(gateway: LoadTarget(host: "127.0.0.1", port: gateway), actions: actions, runID: runID)
        configuration.push = push.map { LoadTarget(host: "127.0.0.1", port: $0) }
        configuration.path = path
        configuration.rate = rate
        configuration.duration = .milliseconds(Int64(seconds * 1000))
        configuration.connections = connections
        configuration.batchSize = batchSize
        configuration.users = users
        configuration.zipfExponent = zipf
        configuration.subscribers = subscribers
        configuration.drain = .milliseconds(Int64(drain * 1000))
        let report = try await LoadGenerator(configuration: configuration, tokens: try await LoadTokens.minting(auth: auth, runID: runID)).run()
        let errors = report.statuses.filter { $0.key != "200" && $0.key != "202" }
        if !errors.isEmpty { log("    (\(path.rawValue)\(path == .batch ? " ×\(batchSize)" : "") on port \(path.isQuery ? push ?? 0 : gateway): answers other than 200/202: \(errors.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")))") }
        return report
    }

    /// Waits until the workers' consumer lag is zero (read from their /metrics).
    func waitForWorkers(port: Int, within limit: Duration = .seconds(120)) async throws {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            let metrics = try await LoadProbe.get(port: port, path: "/metrics").body
            let lag = metrics.split(separator: "\n").filter { $0.hasPrefix("worker_consumer_lag{") }
                .compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }
            if !lag.isEmpty, lag.allSatisfy({ $0 == 0 }) { return }
            try await Task.sleep(for: .milliseconds(250))
        }
        throw BenchError("the worker did not catch up within \(limit)")
    }

    /// The benchmarks' one median (the Kafka benchmark's).
    static func median(_ values: [Double]) -> Double { KafkaBenchmark.Measurement.median(values) }
}

/// A result line: the figure, the baseline and their ratio, with each repetition's values.
struct BenchLine: Encodable {
    var name: String
    var values: [Double]
    var unit: String
    var baseline: [Double]?

    /// Appends this line, as one JSON object with its benchmark's name and the date, to `file` (for
    /// `scripts/bench-chart.py`).
    func record(benchmark: String, to file: String?) throws {
        guard let file else { return }
        struct Record: Encodable {
            var benchmark: String
            var date: String
            var line: BenchLine
            var median: Double
            var baselineMedian: Double?
        }
        let record = Record(
            benchmark: benchmark, date: ISO8601DateFormatter().string(from: Date()), line: self, median: HTTPBenchmark.median(values),
            baselineMedian: baseline.map(HTTPBenchmark.median))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var data = try encoder.encode(record)
        data.append(UInt8(ascii: "\n"))
        if !FileManager.default.fileExists(atPath: file) { FileManager.default.createFile(atPath: file, contents: nil) }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: file))
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: data)
    }

    /// Prints the line and records it.
    func report(benchmark: String, to file: String?) throws {
        print(text)
        try record(benchmark: benchmark, to: file)
    }

    var text: String {
        let value = HTTPBenchmark.median(values)
        var text = name.padding(toLength: 34, withPad: " ", startingAt: 0) + String(format: "%12.1f %@", value, unit as NSString)
        if let baseline, !baseline.isEmpty {
            text += String(format: "   baseline %10.1f   ratio %.3f", HTTPBenchmark.median(baseline), value / HTTPBenchmark.median(baseline))
        }
        return text + "   runs: " + values.map { String(format: "%.1f", $0) }.joined(separator: ", ")
    }
}

/// What every HTTP benchmark takes: where the servers are, the keys tokens are minted with, the Redis database it
/// flushes, and where its results are recorded.
public struct HTTPBenchmarkOptions: ParsableArguments {
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var auth: AuthOptions
    @Option(help: "The Redis database to use; it is FLUSHED.") var redisDatabase = 9
    @Option(help: "Append the results as JSON lines to this file (for scripts/bench-chart.py).") var record: String?

    public init() {}

    func benchmark() throws -> HTTPBenchmark {
        HTTPBenchmark(connection: try connection.settings(), auth: auth.settings, redisDatabase: redisDatabase, log: { print($0) })
    }
}

extension ScoreboardCommand.Bench {
    /// A bare Hummingbird server: the baseline the HTTP benchmarks compare with.
    public struct BaselineServer: AsyncParsableCommand {
        public init() {}
        public static let configuration = CommandConfiguration(
            commandName: "baseline-server", abstract: "A bare Hummingbird server (GET and POST answer a small JSON body): the HTTP baseline.")

        @OptionGroup var server: ServerOptions

        public func run() async throws {
            let router = Router()
            let body = ByteBuffer(string: #"{"ok":true}"#)
            router.get("/health/ready") { _, _ in Response(status: .ok, body: .init(byteBuffer: body)) }
            // The least an open event stream costs in Hummingbird: one event, then the response stays open, parked on
            // a continuation, until the client goes (the fan-out benchmark's memory baseline per subscriber).
            router.get("/stream") { _, context in
                Response(status: .ok, headers: [.contentType: "text/event-stream"], body: ResponseBody { writer in
                    try await writer.write(ByteBuffer(staticString: ": connected\n\n"))
                    // A heartbeat, as the push gateway sends: a client that went away makes a write fail, which ends
                    // the stream (a closed socket alone is only a half-closure the server may never see).
                    while true {
                        try await Task.sleep(for: .seconds(5))
                        try await writer.write(ByteBuffer(staticString: ": heartbeat\n\n"))
                    }
                })
            }
            router.get("**") { _, _ in Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: body)) }
            router.post("**") { request, _ in
                // Read the body, as the gateway must.
                _ = try await request.body.collect(upTo: 2 << 20)
                return Response(status: .accepted, headers: [.contentType: "application/json"], body: .init(byteBuffer: body))
            }
            let logger = RoleLogging.logger("scoreboard.baseline")
            let app = server.settings(defaultPort: 8090).application(router: router, name: "baseline", logger: logger)
            try await runServices([app], logger: logger)
        }
    }

    public struct Ingest: AsyncParsableCommand {
        public init() {}
        public static let configuration = CommandConfiguration(
            abstract: "Gateway throughput (batches, player flow) and the player path's latency at a fixed rate, beside a bare Hummingbird POST.")

        @OptionGroup var options: HTTPBenchmarkOptions
        @Option(help: "Repetitions; medians are reported.") var repetitions = 3
        @Option(help: "Seconds per measurement.") var seconds: Double = 8
        @Option(help: "Connections.") var connections = 16
        @Option(help: "Open-loop rate of the player-path latency measurement (scores/s).") var playerRate: Double = 5_000

        public func run() async throws {
            let bench = try options.benchmark()
            let record = options.record
            var baseline: [Double] = [], batch1000: [Double] = [], batch100: [Double] = [], batch100p50: [Double] = []
            var player: [Double] = [], playerP99: [Double] = [], playerAchieved: [Double] = []
            try await bench.withStack { processes, runID in
                let base = try await processes.start("baseline", ["bench", "baseline-server"])
                let gateway = try await processes.start("gateway", HTTPBenchmark.gatewayArguments)
                for repetition in 1...repetitions {
                    print("repetition \(repetition) of \(repetitions)")
                    // Throughput runs spread events over many players, uniformly: the catalog's per-player limits
                    // (10 quests a minute, 5 matches an hour…) would otherwise turn most of them into 429s.
                    let bare = try await bench.withCPU([base], unit: "requests", units: { Double($0.requests) }) {
                        try await bench.load(.batch, gateway: base.port, runID: runID, seconds: seconds, connections: connections, batchSize: 1)
                    }
                    baseline.append(bare.requestsPerSecond)
                    print(String(format: "  bare POST                 %10.0f req/s", bare.requestsPerSecond))
                    let large = try await bench.withCPU([gateway]) {
                        try await bench.load(
                            .batch, gateway: gateway.port, runID: "\(runID)a\(repetition)", seconds: seconds, connections: connections, batchSize: 1_000,
                            users: 10_000_000, zipf: 0)
                    }
                    batch1000.append(large.acceptedPerSecond)
                    print(String(format: "  batch, 1000 items         %10.0f events/s  p50 %.1f ms per request", large.acceptedPerSecond, large.serviceTime.p50))
                    let small = try await bench.load(
                        .batch, gateway: gateway.port, runID: "\(runID)b\(repetition)", seconds: seconds, connections: connections, batchSize: 100,
                        users: 10_000_000, zipf: 0)
                    batch100.append(small.acceptedPerSecond)
                    batch100p50.append(small.serviceTime.p50)
                    print(String(format: "  batch, 100 items          %10.0f events/s  p50 %.1f ms per request", small.acceptedPerSecond, small.serviceTime.p50))
                    let flows = try await bench.withCPU([gateway], unit: "scores") {
                        try await bench.load(
                            .player, gateway: gateway.port, runID: "\(runID)c\(repetition)", seconds: seconds, connections: connections * 2, users: 100_000,
                            zipf: 0)
                    }
                    player.append(flows.acceptedPerSecond)
                    print(String(format: "  player flow, closed loop  %10.0f scores/s (2 requests each)  p99 %.1f ms", flows.acceptedPerSecond, flows.serviceTime.p99))
                    let paced = try await bench.load(
                        .player, gateway: gateway.port, runID: "\(runID)d\(repetition)", rate: playerRate, seconds: seconds, connections: connections * 4,
                        users: 100_000, zipf: 0)
                    playerP99.append(paced.latency.p99)
                    playerAchieved.append(paced.acceptedPerSecond)
                    print(String(format: "  player flow at %.0f/s      p50 %.1f ms  p99 %.1f ms (from schedule), %.0f scores/s accepted",
                                 playerRate, paced.latency.p50, paced.latency.p99, paced.acceptedPerSecond))
                }
            }
            print("")
            print("ingest (medians of \(repetitions); baseline: a bare Hummingbird POST on the same box, same client)")
            try BenchLine(name: "batch ingest, 1000-item batches", values: batch1000, unit: "events/s", baseline: baseline).report(benchmark: "ingest", to: record)
            try BenchLine(name: "batch ingest, 100-item batches", values: batch100, unit: "events/s", baseline: baseline).report(benchmark: "ingest", to: record)
            try BenchLine(name: "  p50 per 100-item request", values: batch100p50, unit: "ms").report(benchmark: "ingest", to: record)
            try BenchLine(name: "player flow (token + score)", values: player, unit: "scores/s", baseline: baseline).report(benchmark: "ingest", to: record)
            try BenchLine(name: String(format: "player p99 at %.0f/s (open loop)", playerRate), values: playerP99, unit: "ms").report(benchmark: "ingest", to: record)
            try BenchLine(name: "  accepted at that rate", values: playerAchieved, unit: "scores/s").report(benchmark: "ingest", to: record)
        }
    }

    public struct Latency: AsyncParsableCommand {
        public init() {}
        public static let configuration = CommandConfiguration(
            abstract: "202 → SSE update latency through gateway, worker and push gateway at a fixed event rate.")

        @OptionGroup var options: HTTPBenchmarkOptions
        @Option(help: "Repetitions; medians are reported.") var repetitions = 3
        @Option(help: "Seconds per measurement.") var seconds: Double = 15
        @Option(help: "Events per second, open loop.") var rate: Double = 5_000
        @Option(help: "Events per batch.") var batchSize = 100
        @Option(help: "SSE subscribers measuring.") var subscribers = 4
        // Many players, uniformly: at 5k events/s a Zipf-drawn few thousand players would hit the catalog's
        // per-player limits (10 quests a minute, 5 matches an hour…) and most events would be 429s, not latency.
        @Option(help: "Players the events are drawn from.") var users = 1_000_000
        @Option(help: "Zipf exponent of the players drawn (0: uniform).") var zipf: Double = 0

        public func run() async throws {
            let bench = try options.benchmark()
            let record = options.record
            var p50: [Double] = [], p99: [Double] = [], accepted: [Double] = [], unseen: [Double] = []
            try await bench.withStack { processes, runID in
                let gateway = try await processes.start("gateway", HTTPBenchmark.gatewayArguments)
                let worker = try await processes.start("worker", ["worker"])
                let push = try await processes.start("push", ["push", "--max-streams-per-address", "100000"])
                for repetition in 1...repetitions {
                    let report = try await bench.withCPU([gateway, worker, push]) {
                        try await bench.load(
                            .batch, gateway: gateway.port, push: push.port, runID: "\(runID)r\(repetition)", rate: rate, seconds: seconds,
                            connections: 32, batchSize: batchSize, users: users, zipf: zipf, subscribers: subscribers)
                    }
                    let endToEnd = report.endToEnd
                    p50.append(endToEnd?.p50 ?? .nan)
                    p99.append(endToEnd?.p99 ?? .nan)
                    accepted.append(report.acceptedPerSecond)
                    unseen.append(Double(report.unseenBySubscribers.reduce(0, +)))
                    print(String(format: "repetition %d: %.0f events/s accepted, 202 → update p50 %.1f ms, p99 %.1f ms, max %.1f ms", repetition,
                                 report.acceptedPerSecond, endToEnd?.p50 ?? .nan, endToEnd?.p99 ?? .nan, endToEnd?.max ?? .nan))
                }
            }
            print("")
            print(String(format: "latency at %.0f events/s (%d-event batches, %d subscribers; medians of %d)", rate, batchSize, subscribers, repetitions))
            try BenchLine(name: "accepted", values: accepted, unit: "events/s").report(benchmark: "latency", to: record)
            try BenchLine(name: "202 → SSE update p50", values: p50, unit: "ms").report(benchmark: "latency", to: record)
            try BenchLine(name: "202 → SSE update p99", values: p99, unit: "ms").report(benchmark: "latency", to: record)
            try BenchLine(name: "events not seen at the end", values: unseen, unit: "").report(benchmark: "latency", to: record)
        }
    }

    public struct Queries: AsyncParsableCommand {
        public init() {}
        public static let configuration = CommandConfiguration(
            abstract: "Top 10, around-me and standing over HTTP, beside a bare Hummingbird GET, on boards filled by the real pipeline.")

        @OptionGroup var options: HTTPBenchmarkOptions
        @Option(help: "Repetitions; medians are reported.") var repetitions = 3
        @Option(help: "Seconds per measurement.") var seconds: Double = 8
        @Option(help: "Connections.") var connections = 16
        @Option(help: "Players on the boards.") var users = 10_000
        @Option(help: "Events per second while filling the boards.") var fillRate: Double = 20_000
        @Option(help: "Seconds of filling.") var fillSeconds: Double = 5

        public func run() async throws {
            let bench = try options.benchmark()
            let record = options.record
            var baseline: [Double] = [], rates: [LoadConfiguration.Path: [Double]] = [:], p99: [LoadConfiguration.Path: [Double]] = [:]
            var gzipLines: [BenchLine] = []
            try await bench.withStack { processes, runID in
                let base = try await processes.start("baseline", ["bench", "baseline-server"])
                let gateway = try await processes.start("gateway", HTTPBenchmark.gatewayArguments)
                let worker = try await processes.start("worker", ["worker"])
                let push = try await processes.start("push", ["push"])
                print("filling the boards: \(users) players")
                _ = try await bench.load(
                    .batch, gateway: gateway.port, runID: runID, rate: fillRate, seconds: fillSeconds, connections: 16, batchSize: min(500, max(1, Int(fillRate / 10))),
                    users: users)
                try await bench.waitForWorkers(port: worker.port)
                for repetition in 1...repetitions {
                    print("repetition \(repetition) of \(repetitions)")
                    let bare = try await bench.withCPU([base], unit: "requests", units: { Double($0.requests) }) {
                        try await bench.load(.top, gateway: gateway.port, push: base.port, runID: runID, seconds: seconds, connections: connections, users: users)
                    }
                    baseline.append(bare.requestsPerSecond)
                    print(String(format: "  bare GET      %10.0f req/s", bare.requestsPerSecond))
                    for path in [LoadConfiguration.Path.top, .around, .standing] {
                        let report = try await bench.withCPU([push], unit: "requests", units: { Double($0.requests) }) {
                            try await bench.load(path, gateway: gateway.port, push: push.port, runID: runID, seconds: seconds, connections: connections, users: users)
                        }
                        rates[path, default: []].append(report.requestsPerSecond)
                        p99[path, default: []].append(report.serviceTime.p99)
                        print(String(format: "  %-12@  %10.0f req/s  p99 %.2f ms", path.rawValue as NSString, report.requestsPerSecond, report.serviceTime.p99))
                    }
                }
                // What the push gateway held in memory by the end (its answers came from there, not from Redis).
                let metrics = try await LoadProbe.get(port: push.port, path: "/metrics").body
                for line in metrics.split(separator: "\n") where line.hasPrefix("push_board_memory_") { print("  push gateway: \(line)") }
                gzipLines = try await GzipMeasurement.measure(push: push.port)
            }
            print("")
            print("queries over HTTP (medians of \(repetitions); baseline: a bare Hummingbird GET; around/standing of players drawn by Zipf, some 404)")
            for path in [LoadConfiguration.Path.top, .around, .standing] {
                try BenchLine(name: path.rawValue, values: rates[path] ?? [], unit: "req/s", baseline: baseline).report(benchmark: "queries", to: record)
                try BenchLine(name: "  p99 over HTTP", values: p99[path] ?? [], unit: "ms").report(benchmark: "queries", to: record)
            }
            print("")
            print("gzip of large JSON answers (Accept-Encoding: gzip): the push gateway's answers, compressed here as it compresses them")
            for line in gzipLines { try line.report(benchmark: "queries", to: record) }
        }
    }

    public struct Fanout: AsyncParsableCommand {
        public init() {}
        public static let configuration = CommandConfiguration(
            abstract: "Idle SSE subscribers: the push gateway's memory per subscriber, and how long an update takes to reach all of them.")

        @OptionGroup var options: HTTPBenchmarkOptions
        @Option(parsing: .upToNextOption, help: "Subscriber counts to measure.") var subscribers: [Int] = [2_000, 10_000]
        @Option(help: "Events per second while measuring the latency.") var rate: Double = 20
        @Option(help: "Seconds of traffic per count.") var seconds: Double = 10

        public func run() async throws {
            let bench = try options.benchmark()
            let record = options.record
            var lines: [String] = []
            let rate = self.rate, seconds = self.seconds
            for count in subscribers {
                try await bench.withStack { processes, runID in
                    // Baseline in the same run: the same number of idle streams held open on a bare Hummingbird server.
                    let base = try await processes.start("baseline", ["bench", "baseline-server"])
                    let bare = try await IdleStreams.measure(count, port: base.port, process: base.process)
                    let bareLine = String(format: "%6d idle streams on a bare Hummingbird server: %.1f KiB each", count, bare)
                    print(bareLine)
                    lines.append(bareLine)
                    try BenchLine(name: "\(count) bare streams: memory each", values: [bare], unit: "KiB").record(benchmark: "fanout", to: record)
                    let gateway = try await processes.start("gateway", HTTPBenchmark.gatewayArguments)
                    _ = try await processes.start("worker", ["worker"])
                    let push = try await processes.start(
                        "push", ["push", "--max-streams-per-address", String(count + 100), "--max-streams", String(count + 100)])
                    let before = BenchProcesses.residentBytes(of: push.process) ?? 0
                    // The subscribers connect before the traffic starts, so the memory read during it is theirs.
                    async let measuring = bench.load(
                        .batch, gateway: gateway.port, push: push.port, runID: runID, rate: rate, seconds: seconds, connections: 4,
                        batchSize: 1, subscribers: count)
                    var idle = before
                    for _ in 0..<Int(seconds * 2) {
                        try await Task.sleep(for: .milliseconds(500))
                        idle = max(idle, BenchProcesses.residentBytes(of: push.process) ?? 0)
                    }
                    let report = try await measuring
                    let perSubscriber = Double(idle - before) / Double(count) / 1024
                    let line = String(format: "%6d subscribers: %.1f KiB each (push RSS %.0f → %.0f MiB), update to all p50 %.1f ms, p99 %.1f ms, %d unseen",
                                      count, perSubscriber, Double(before) / 1_048_576, Double(idle) / 1_048_576, report.endToEnd?.p50 ?? .nan,
                                      report.endToEnd?.p99 ?? .nan, report.unseenBySubscribers.reduce(0, +))
                    print(line)
                    lines.append(line)
                    try BenchLine(name: "\(count) subscribers: memory each", values: [perSubscriber], unit: "KiB").record(benchmark: "fanout", to: record)
                    try BenchLine(name: "\(count) subscribers: update to all p99", values: [report.endToEnd?.p99 ?? .nan], unit: "ms")
                        .record(benchmark: "fanout", to: record)
                }
            }
            print("")
            print("fan-out (\(rate) events/s, one board, every subscriber receives every update)")
            lines.forEach { print($0) }
        }
    }
}

/// What gzip saves on the large answers and what one compression costs: the answers are read from the push gateway
/// (identity), then compressed in this process by the gateway's own function (``ResponseGzip``), timed over repeats.
enum GzipMeasurement {
    static let answers = [
        ("gzip top-1000 page", "/v1/leaderboards/all-time/global?limit=1000"),
        ("gzip analytics series", "/v1/analytics/points?step=minute&by=guild"),
    ]

    static func measure(push: Int) async throws -> [BenchLine] {
        var lines: [BenchLine] = []
        for (name, path) in answers {
            let answer = try await LoadProbe.get(port: push, path: path)
            guard answer.status == 200 else { throw BenchError("\(path) answered \(answer.status)") }
            let body = ByteBuffer(string: answer.body)
            let compressed = try ResponseGzip.compress(body)
            // Five rounds of 20 compressions: the median round's time per compression.
            var microseconds: [Double] = []
            for _ in 0..<5 {
                let start = ContinuousClock.now
                for _ in 0..<20 { _ = try ResponseGzip.compress(body) }
                let elapsed = ContinuousClock.now - start
                microseconds.append(Double(elapsed.components.seconds) * 1e6 / 20 + Double(elapsed.components.attoseconds) / 1e12 / 20)
            }
            lines.append(BenchLine(name: name, values: [Double(body.readableBytes)], unit: "B identity"))
            lines.append(BenchLine(name: "  gzipped", values: [Double(compressed.readableBytes)], unit: "B"))
            lines.append(BenchLine(
                name: "  saved", values: [100 * (1 - Double(compressed.readableBytes) / Double(max(1, body.readableBytes)))], unit: "%"))
            lines.append(BenchLine(name: "  CPU per compression", values: microseconds, unit: "µs"))
        }
        return lines
    }
}

/// Idle streams held open on a server by plain sockets (a GET, then nothing read beyond the first bytes), for the
/// server's resident memory per open stream: the fan-out benchmark's baseline.
enum IdleStreams {
    /// Opens `count` streams to `port`'s `/stream`, waits until every one got its first bytes, and returns the
    /// server's resident memory growth per stream, in KiB. The sockets are closed before it returns.
    static func measure(_ count: Int, port: Int, process: Process) async throws -> Double {
        let before = BenchProcesses.residentBytes(of: process) ?? 0
        // Blocking socket calls: on a thread of their own, not the cooperative pool.
        let sockets = try await withCheckedThrowingContinuation { (opened: CheckedContinuation<[Int32], any Error>) in
            Thread {
                var sockets: [Int32] = []
                do {
                    for _ in 0..<count {
                        let socket = try connect(port: port)
                        sockets.append(socket)
                        var timeout = timeval(tv_sec: 10, tv_usec: 0)
                        setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                        let request = "GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                        guard request.withCString({ write(socket, $0, strlen($0)) }) > 0 else { throw BenchError("write to the baseline stream failed") }
                    }
                    // Every stream answered (its head and first event read): the server holds all of them now.
                    var buffer = [UInt8](repeating: 0, count: 512)
                    for socket in sockets {
                        guard read(socket, &buffer, buffer.count) > 0 else { throw BenchError("a baseline stream did not answer within 10 s") }
                    }
                    opened.resume(returning: sockets)
                } catch {
                    for socket in sockets { close(socket) }
                    opened.resume(throwing: error)
                }
            }.start()
        }
        defer { for socket in sockets { close(socket) } }
        var peak = before
        for _ in 0..<4 {
            try await Task.sleep(for: .milliseconds(250))
            peak = max(peak, BenchProcesses.residentBytes(of: process) ?? 0)
        }
        return Double(peak - before) / Double(count) / 1024
    }

    private static func connect(port: Int) throws -> Int32 {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { throw BenchError("socket() failed: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(socket)
            throw BenchError("connect to port \(port) failed: errno \(errno)")
        }
        return socket
    }
}
