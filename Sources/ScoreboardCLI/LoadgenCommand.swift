import ArgumentParser
import Foundation
import JWTKit
import ScoreboardCore
import ScoreboardDefinitions
import ScoreboardHTTP
import ScoreboardLoadgen

extension ScoreboardCommand {
    public struct Loadgen: AsyncParsableCommand {
        public init() {}
        public static let configuration = CommandConfiguration(
            abstract: "Send realistic score traffic open loop and measure latency, including 202 → stream update with subscribers.",
            discussion: """
                Players are drawn from a Zipf distribution, with regions and guilds; actions come from pipelines/actions.yaml.
                Requests go out on schedule whether or not earlier ones were answered, and latency is measured from each
                request's intended send time (no coordinated omission), in HDR histograms. Bearer tokens are minted with the
                JWKS file's HS256 key, as `scoreboard token mint` does. Each run uses fresh player ids (--run-id).
                The gateway's per-user and per-IP limits apply: raise them (scoreboard gateway --per-user-per-minute …) to
                measure throughput rather than 429s.
                """)

        @OptionGroup var auth: AuthOptions
        @Option(help: "The gateway.") var gateway = "http://127.0.0.1:8080"
        @Option(help: "The push gateway (for --subscribers).") var push = "http://127.0.0.1:8081"
        @Option(help: "player (action token, then score), batch (game-server batches), or the queries top, around, standing (of --run-id's players).")
        var path: String = "batch"
        @Option(help: "Target events (or queries) per second, open loop; 0: closed loop, as fast as the connections go.") var rate: Double = 1_000
        @Option(help: "Seconds of traffic.") var duration: Double = 10
        @Option(help: "Events per batch (batch path).") var batchSize = 100
        @Option(help: "Distinct players.") var users = 10_000
        @Option(help: "Zipf exponent of the players' activity.") var zipf: Double = 1.1
        @Option(help: "HTTP connections to the gateway.") var connections = 32
        @Option(help: "Subscribers measuring 202 → update.") var subscribers = 0
        @Option(help: "How the subscribers follow the board: sse (server-sent events) or ws (WebSocket).")
        var subscriberTransport: String = "sse"
        @Option(help: "The board stream they follow (window/dimension[/value]).") var board = "all-time/global"
        @Option(help: "Seconds to wait after the traffic for the subscribers' last updates.") var drain: Double = 15
        @Option(help: "Random seed (the same seed, the same traffic).") var seed: UInt64 = 1
        @Option(help: "Prefix of this run's player ids (default: random).") var runID: String?
        @Flag(help: "Print the report as JSON on stdout (progress stays on stderr).") var json = false

        public func validate() throws {
            guard let parsed = LoadConfiguration.Path(rawValue: path) else {
                throw ValidationError("--path: \(LoadConfiguration.Path.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            guard rate >= 0, duration > 0, drain >= 0 else { throw ValidationError("--rate must not be negative, --duration must be positive") }
            if parsed.isQuery, runID == nil { throw ValidationError("--path \(path): give --run-id of a run that created the players") }
            if parsed.isQuery, subscribers > 0 { throw ValidationError("--subscribers: only with player or batch traffic") }
            guard (1...1_000).contains(batchSize) else { throw ValidationError("--batch-size: 1 to 1000") }
            guard users > 0, connections > 0, subscribers >= 0, zipf >= 0 else { throw ValidationError("--users and --connections must be positive") }
            guard SubscriberTransport(rawValue: subscriberTransport) != nil else { throw ValidationError("--subscriber-transport: sse or ws") }
            guard LoadTarget(gateway) != nil, LoadTarget(push) != nil else { throw ValidationError("--gateway and --push: http://host:port") }
            if let runID, ScoreEvent.identifierProblem("lg-\(runID)-0") != nil { throw ValidationError("--run-id: letters, digits, _ . - only") }
        }

        public func run() async throws {
            let root = DefinitionsLocation.root()
            // Tokens are minted with the local keys unless --jwks says otherwise; a fresh clone has none yet (only
            // missing files are written, so a running `scoreboard dev` keeps its keys).
            if auth.jwks == nil, ProcessInfo.processInfo.environment["SCOREBOARD_JWKS_FILE"] == nil {
                _ = try LocalKeys.ensure(in: root.appendingPathComponent(".local/dev"))
            }
            let catalog = try PipelineCatalog.load(directory: root.appendingPathComponent("pipelines"))
            var configuration = LoadConfiguration(
                gateway: LoadTarget(gateway)!, actions: catalog.actions.actions.keys.sorted(),
                runID: runID ?? String(UUID().uuidString.prefix(8)).lowercased())
            configuration.push = LoadTarget(push)
            configuration.path = LoadConfiguration.Path(rawValue: path)!
            configuration.rate = rate
            configuration.duration = .milliseconds(Int64(duration * 1000))
            configuration.batchSize = batchSize
            configuration.users = users
            configuration.zipfExponent = zipf
            configuration.connections = connections
            configuration.subscribers = subscribers
            configuration.subscriberTransport = SubscriberTransport(rawValue: subscriberTransport)!
            configuration.board = board
            configuration.drain = .milliseconds(Int64(drain * 1000))
            configuration.seed = seed

            let generator = LoadGenerator(configuration: configuration, tokens: try await LoadTokens.minting(auth: auth.settings, runID: configuration.runID))
            let report = try await generator.run { progress in
                FileHandle.standardError.write(Data((progress.line + "\n").utf8))
            }
            print(json ? report.json : report.table)
            if !json { print("run id: \(configuration.runID) (query its players with --path top|around|standing --run-id \(configuration.runID))") }
        }
    }
}

/// Bearer tokens for generated traffic, signed with the JWKS file's HS256 key as `scoreboard token mint` does.
enum LoadTokens {
    static func minting(auth: AuthSettings, runID: String) async throws -> LoadGenerator.Tokens {
        let file = try JWKSFile.load(path: auth.jwksPath)
        guard let key = file.keys.first(where: { $0.type == "oct" }) else { throw ValidationError("\(auth.jwksPath): no HS256 key to mint tokens with") }
        let keys = try await file.keyCollection()
        let issuer = auth.configuration.issuer, audience = auth.configuration.audience
        let lifetime = min(3_600, TimeInterval(auth.configuration.maximumLifetime.components.seconds))
        let serverSubject = "loadgen-\(runID)"
        return { user in
            let now = Date()
            let claims = ScoreboardClaims(
                subject: user?.id ?? serverSubject, role: user == nil ? .gameServer : .player, region: user?.region,
                guild: user?.guild, issuer: issuer, audience: audience, issuedAt: now, expiresAt: now.addingTimeInterval(lifetime))
            return try await JWTAuthenticator.sign(claims, keys: keys, kid: key.kid)
        }
    }
}
