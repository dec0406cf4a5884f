import ArgumentParser
import Foundation
import ScoreboardCore
import ScoreboardDefinitions
import ScoreboardGateway
import ScoreboardHTTP
import ScoreboardKafka
import ScoreboardPostgres
import ScoreboardPush
import ServiceLifecycle

extension ScoreboardCommand {
    public struct Dev: AsyncParsableCommand {
        public init() {}
        public static let configuration = CommandConfiguration(
            abstract: "Run gateway, worker and push together against the local stack, with local keys and a demo token.")

        @OptionGroup var connection: ConnectionOptions
        @Option(help: "Gateway port.") var gatewayPort = 8080
        @Option(help: "Push gateway and query API port.") var pushPort = 8081
        @Option(help: "Worker operations port (/health, /metrics).") var workerPort = 8082

        public func run() async throws {
            let root = DefinitionsLocation.root()
            for line in try LocalKeys.ensure(in: root.appendingPathComponent(".local/dev")) { print(line) }
            let context = try RoleContext(connection: connection)
            let logger = RoleLogging.logger("scoreboard.dev")

            // Topics and tables first, so the roles start on a ready stack.
            let catalog = try TopicCatalog.load(directory: root.appendingPathComponent("topics")).namespaced(context.settings.topicNamespace)
            let admin = try KafkaAdminClient(configuration: context.settings.kafkaClient, logger: logger)
            _ = try await TopicsApplier(admin: admin).apply(catalog)

            let auth = AuthSettings(jwksPath: root.appendingPathComponent(".local/dev/jwks.json").path, configuration: .init())
            var gatewayOptions = GatewayConfiguration.Options()
            gatewayOptions.perIPPerMinute = 100_000  // every local client shares 127.0.0.1
            func server(_ port: Int) -> HTTPServerSettings { HTTPServerSettings(host: "127.0.0.1", port: port) }
            let gateway = try await Roles.gateway(
                context: context, server: server(gatewayPort), auth: auth, options: gatewayOptions,
                actionKeysPath: root.appendingPathComponent(".local/dev/action-keys.json").path)
            // The group carries the topic namespace, so a dev run and tests (each in a namespace of its own) never
            // share a group, and so never take each other's partitions.
            let groupID = ProcessInfo.processInfo.environment["SCOREBOARD_WORKER_GROUP"] ?? "\(context.settings.topicNamespace)scoreboard-workers"
            let worker = try await Roles.worker(context: context, server: server(workerPort), groupID: groupID)
            var pushConfiguration = PushGateway.Configuration()
            pushConfiguration.heartbeatInterval = .seconds(15)
            let push = try await Roles.push(context: context, server: server(pushPort), auth: auth, configuration: pushConfiguration)
            defer {
                gateway.cleanup()
                worker.cleanup()
                push.cleanup()
            }

            let file = try JWKSFile.load(path: auth.jwksPath)
            let now = Date()
            let claims = ScoreboardClaims(
                subject: "demo-player", role: .player, region: "eu", guild: "dragons", issuer: auth.configuration.issuer,
                audience: auth.configuration.audience, issuedAt: now, expiresAt: now.addingTimeInterval(86_400))
            let token = try await JWTAuthenticator.sign(claims, keys: try await file.keyCollection(), kid: file.keys.first { $0.type == "oct" }!.kid)
            FileHandle.standardOutput.write(Data("""

                scoreboard dev
                  gateway  http://127.0.0.1:\(gatewayPort)   (POST /v1/actions/{action}/token, POST /v1/scores)
                  push     http://127.0.0.1:\(pushPort)   (GET /v1/leaderboards/all-time/global, /v1/streams/ws, /v1/streams/sse/…)
                  worker   http://127.0.0.1:\(workerPort)/health, /metrics
                  demo token (player demo-player, region eu, guild dragons, 24 h):
                    \(token)
                  try:
                    T=\(token)
                    A=$(curl -s -X POST -H "Authorization: Bearer $T" http://127.0.0.1:\(gatewayPort)/v1/actions/complete-quest/token | sed 's/.*"actionToken":"\\([^"]*\\)".*/\\1/')
                    curl -s -X POST -H "Authorization: Bearer $T" -H 'Content-Type: application/json' \\
                      -d "{\\"action\\":\\"complete-quest\\",\\"actionToken\\":\\"$A\\",\\"idempotencyKey\\":\\"$(cat /proc/sys/kernel/random/uuid)\\"}" \\
                      http://127.0.0.1:\(gatewayPort)/v1/scores
                    curl -s http://127.0.0.1:\(pushPort)/v1/leaderboards/all-time/global
                  Ctrl-C stops all three.

                """.utf8))
            // Dependencies first, HTTP servers last: graceful shutdown runs in reverse, so servers stop first.
            let services = gateway.services + worker.services + push.services
            try await runServices(services, logger: logger)
        }
    }
}
