import ArgumentParser
import Foundation
import JWTKit
import Logging
import ScoreboardCore
import ScoreboardDefinitions
import ScoreboardGateway
import ScoreboardHTTP
import ScoreboardPostgres
import ScoreboardPush
import ScoreboardRedis
import ScoreboardWorker

extension ScoreboardCommand {
    public struct Gateway: AsyncParsableCommand {
        public init() {}
        public static let configuration = CommandConfiguration(abstract: "Run the ingest gateway (HTTP): authenticated score actions to Kafka.")

        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var server: ServerOptions
        @OptionGroup var auth: AuthOptions
        @OptionGroup var gateway: GatewayOptions

        public func run() async throws {
            let context = try RoleContext(connection: connection)
            let role = try await Roles.gateway(
                context: context, server: server.settings(defaultPort: 8080), auth: auth.settings, options: gateway.options,
                actionKeysPath: gateway.actionKeysPath)
            defer { role.cleanup() }
            try await runServices(role.services, logger: RoleLogging.logger("scoreboard.gateway"))
        }
    }

    public struct Worker: AsyncParsableCommand {
        public init() {}
        public static let configuration = CommandConfiguration(abstract: "Run a stream worker: score events to boards in PostgreSQL and Redis, exactly once.")

        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var server: ServerOptions
        @Option(help: "The workers' consumer group (env SCOREBOARD_WORKER_GROUP, default scoreboard-workers).") var group: String?

        public func run() async throws {
            let context = try RoleContext(connection: connection)
            let groupID = group ?? ProcessInfo.processInfo.environment["SCOREBOARD_WORKER_GROUP"] ?? "scoreboard-workers"
            let role = try await Roles.worker(context: context, server: server.settings(defaultPort: 8082), groupID: groupID)
            defer { role.cleanup() }
            try await runServices(role.services, logger: RoleLogging.logger("scoreboard.worker"))
        }
    }

    public struct Push: AsyncParsableCommand {
        public init() {}
        public static let configuration = CommandConfiguration(abstract: "Run the push gateway and query API: WebSocket and SSE streams, top-N, around-me, standings.")

        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var server: ServerOptions
        @OptionGroup var auth: AuthOptions
        @Option(help: "Seconds between heartbeats on idle streams (personal streams re-check their token as often).")
        var heartbeatSeconds = 15
        @Option(help: "Open streams one address may hold (raise it behind a proxy).") var maxStreamsPerAddress = StreamLimits().perAddress
        @Option(help: "Open streams one authenticated user may hold.") var maxStreamsPerUser = StreamLimits().perUser
        @Option(help: "Open streams in all; past it, 503 server-busy.") var maxStreams = StreamLimits().total
        @Option(help: "Boards one WebSocket connection may follow.") var maxSubscriptionsPerConnection = PushGateway.Configuration().maxSubscriptionsPerConnection
        @Option(help: "Seconds an HTTP connection may sit idle or take to send its request head.") var idleTimeoutSeconds = 30

        public func run() async throws {
            let context = try RoleContext(connection: connection)
            var configuration = PushGateway.Configuration()
            configuration.heartbeatInterval = .seconds(heartbeatSeconds)
            configuration.streams.perAddress = maxStreamsPerAddress
            configuration.streams.perUser = maxStreamsPerUser
            configuration.streams.total = maxStreams
            configuration.maxSubscriptionsPerConnection = maxSubscriptionsPerConnection
            var limits = HTTPServerLimits()
            limits.idleTimeout = .seconds(idleTimeoutSeconds)
            let role = try await Roles.push(
                context: context, server: server.settings(defaultPort: 8081, limits: limits), auth: auth.settings, configuration: configuration)
            defer { role.cleanup() }
            try await runServices(role.services, logger: RoleLogging.logger("scoreboard.push"))
        }
    }

    public struct Rebuild: AsyncParsableCommand {
        public init() {}
        public static let configuration = CommandConfiguration(
            abstract: "Recompute the Redis boards from PostgreSQL's totals (every all-time board and every period still retained).")

        @OptionGroup var connection: ConnectionOptions

        public func run() async throws {
            let context = try RoleContext(connection: connection)
            let logger = makeLogger("scoreboard.rebuild")
            let redis = context.redis(logger: logger)
            defer { redis.close() }
            let store = PostgresStore(configuration: context.settings.postgres, logger: logger)
            let catalog = context.pipelines.leaderboards
            let rebuilt = try await store.withRunningClient { store in
                let ledger = ScoreLedger(client: store.client, consumerGroup: "", logger: logger)
                return try await BoardRebuild(ledger: ledger, boards: RedisBoardStore(redis: redis, catalog: catalog), catalog: catalog).run { report in
                    print("\(report.window.rawValue): \(report.boards) boards, \(report.totalRows) total rows")
                }
            }
            print("rebuilt \(rebuilt) boards")
        }
    }
}

public struct GatewayOptions: ParsableArguments {
    @Option(help: "Action-token secrets (env SCOREBOARD_ACTION_TOKEN_KEYS, default .local/dev/action-keys.json).") var actionTokenKeys: String?
    @Option(help: "Requests per minute per client IP.") var perIPPerMinute = 600
    @Option(help: "Scores per minute per user, across actions.") var perUserPerMinute = 120
    @Option(help: "Action tokens a user may mint per minute.") var actionTokensPerUserPerMinute = 120
    @Option(help: "Scores per minute of a user with an open fraud flag (the adaptive limit, until a reviewer closes the flag).")
    var perFlaggedUserPerMinute = 1
    @Option(
        name: .customLong("trusted-proxy"),
        help: "A CIDR of our own proxies whose X-Forwarded-For is believed (repeatable; env SCOREBOARD_TRUSTED_PROXIES, comma-separated).")
    var trustedProxies: [String] = []

    public init() {}

    public func validate() throws {
        for text in trustedProxyTexts where IPNetwork(text) == nil {
            throw ValidationError("--trusted-proxy \(text): expected an address or CIDR such as 10.0.0.0/8")
        }
    }

    var trustedProxyTexts: [String] {
        let fromEnvironment = ProcessInfo.processInfo.environment["SCOREBOARD_TRUSTED_PROXIES"]?
            .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } ?? []
        return trustedProxies.isEmpty ? fromEnvironment : trustedProxies
    }

    var actionKeysPath: String {
        actionTokenKeys ?? ProcessInfo.processInfo.environment["SCOREBOARD_ACTION_TOKEN_KEYS"]
            ?? DefinitionsLocation.root().appendingPathComponent(".local/dev/action-keys.json").path
    }

    var options: GatewayConfiguration.Options {
        var options = GatewayConfiguration.Options()
        options.perIPPerMinute = perIPPerMinute
        options.perUserPerMinute = perUserPerMinute
        options.actionTokensPerUserPerMinute = actionTokensPerUserPerMinute
        options.perFlaggedUserPerMinute = perFlaggedUserPerMinute
        options.trustedProxies = trustedProxyTexts.compactMap(IPNetwork.init)
        return options
    }
}

extension ScoreboardCommand {
    public struct Token: AsyncParsableCommand {
        public init() {}
        public static let configuration = CommandConfiguration(abstract: "Bearer tokens and keys for local use and tests.", subcommands: [Mint.self, InitLocal.self])

        public struct Mint: AsyncParsableCommand {
            public init() {}
            public static let configuration = CommandConfiguration(abstract: "Mint a bearer token signed with an HS256 key of the JWKS file.")

            @OptionGroup var auth: AuthOptions
            @Option(help: "The user id (sub).") var user: String
            @Option(help: "player, game-server or admin.") var role: String = "player"
            @Option(help: "The user's region.") var region: String?
            @Option(help: "The user's guild.") var guild: String?
            @Option(help: "Lifetime in seconds.") var ttl = 3600
            @Option(help: "The signing key's kid (default: the file's first oct key).") var kid: String?

            public func run() async throws {
                guard let role = Role(rawValue: role) else { throw ValidationError("--role: player, game-server or admin") }
                for (name, value) in [("user", user), ("region", region), ("guild", guild)] {
                    if let value, let problem = ScoreEvent.identifierProblem(value) { throw ValidationError("--\(name): \(problem)") }
                }
                let auth = self.auth.settings
                // A token the servers would refuse (exp - iat over their maximum) is no use to anyone.
                let maximum = auth.configuration.maximumLifetime.components.seconds
                guard ttl > 0, Int64(ttl) <= maximum else { throw ValidationError("--ttl: 1 to \(maximum) seconds (the maximum token lifetime)") }
                let file = try JWKSFile.load(path: auth.jwksPath)
                guard let key = file.keys.first(where: { kid == nil ? $0.type == "oct" : $0.kid == kid }) else {
                    throw ValidationError("\(auth.jwksPath): no \(kid.map { "key \($0)" } ?? "oct (HS256) key") to sign with")
                }
                let now = Date()
                let claims = ScoreboardClaims(
                    subject: user, role: role, region: region, guild: guild, issuer: auth.configuration.issuer, audience: auth.configuration.audience,
                    issuedAt: now, expiresAt: now.addingTimeInterval(TimeInterval(ttl)))
                print(try await JWTAuthenticator.sign(claims, keys: try await file.keyCollection(), kid: key.kid))
            }
        }

        public struct InitLocal: AsyncParsableCommand {
            public init() {}
            public static let configuration = CommandConfiguration(
                commandName: "init-local", abstract: "Create .local/dev/jwks.json and action-keys.json with fresh secrets, unless they exist.")

            @Option(help: "The folder (default .local/dev of the repository).") var directory: String?

            public func run() async throws {
                let folder = directory.map { URL(fileURLWithPath: $0) } ?? DefinitionsLocation.root().appendingPathComponent(".local/dev")
                for line in try LocalKeys.ensure(in: folder) { print(line) }
            }
        }
    }
}

enum LocalKeys {
    /// Writes the local key files that are missing; returns what it did.
    static func ensure(in folder: URL) throws -> [String] {
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        var report: [String] = []
        for (name, content) in [("jwks.json", JWKSFile.makeLocal()), ("action-keys.json", ActionTokenKeys.makeLocal())] {
            let file = folder.appendingPathComponent(name)
            if FileManager.default.fileExists(atPath: file.path) {
                report.append("kept    \(file.path)")
            } else {
                try Data(content.utf8).write(to: file)
                try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: file.path)
                report.append("created \(file.path)")
            }
        }
        return report
    }
}
