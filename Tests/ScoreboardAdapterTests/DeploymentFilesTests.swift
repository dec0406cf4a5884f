import Foundation
import ScoreboardCLI
import Testing
import Yams

/// docker-compose.yml cannot be run here (no Docker engine), so these tests keep it in step with the code: the
/// servers have health checks, and the environment it gives the scoreboard image is what the code reads.
@Suite struct DeploymentFilesTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func compose() throws -> [String: Any] {
        let text = try String(contentsOf: Self.root.appendingPathComponent("docker-compose.yml"), encoding: .utf8)
        return try #require(try Yams.load(yaml: try substitutingExampleSecrets(text)) as? [String: Any])
    }

    /// The secrets compose reads from `.env`, as `.env.example` gives them.
    func exampleSecrets() throws -> [String: String] {
        let text = try String(contentsOf: Self.root.appendingPathComponent(".env.example"), encoding: .utf8)
        var values: [String: String] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { values[String(parts[0])] = String(parts[1]) }
        }
        return values
    }

    /// Replaces `${NAME}` and `${NAME:?message}` as compose does; fails on a name `.env.example` does not define.
    func substitutingExampleSecrets(_ text: String) throws -> String {
        let secrets = try exampleSecrets()
        var result = ""
        var rest = Substring(text)
        while let start = rest.range(of: "${") {
            result += rest[..<start.lowerBound]
            let end = try #require(rest[start.upperBound...].firstIndex(of: "}"))
            let name = String(rest[start.upperBound..<end].prefix { $0 != ":" })
            result += try #require(secrets[name], "docker-compose.yml uses ${\(name)}, which .env.example does not define")
            rest = rest[rest.index(after: end)...]
        }
        return result + rest
    }

    /// Bad input guarded against: a password written into the compose file itself.
    @Test func serversDemandCredentialsFromTheEnvFile() throws {
        let text = try String(contentsOf: Self.root.appendingPathComponent("docker-compose.yml"), encoding: .utf8)
        #expect(!text.contains("postgres://scoreboard:scoreboard@"), "a fixed PostgreSQL password")
        #expect(text.contains("${SCOREBOARD_POSTGRES_PASSWORD:?"))
        #expect(text.contains("${SCOREBOARD_REDIS_PASSWORD:?"))
        #expect(text.contains("${SCOREBOARD_KAFKA_SASL_PASSWORD:?"))
        let services = try #require(try compose()["services"] as? [String: Any])
        let redis = try #require(services["redis"] as? [String: Any])
        let command = try #require(redis["command"] as? [String])
        #expect(command.contains("--requirepass"))
        #expect(command.contains("--appendfsync") && command.contains("always"), "ingest state survives a restart")
        let kafka = try #require((services["kafka"] as? [String: Any])?["environment"] as? [String: Any])
        #expect(kafka["KAFKA_SASL_ENABLED_MECHANISMS"] as? String == "PLAIN")
        #expect(kafka["KAFKA_LISTENERS"] as? String == "SASL_PLAINTEXT://:9092,CONTROLLER://:9093", "no listener without authentication")
    }

    @Test func serversHaveHealthChecksAndVolumes() throws {
        let services = try #require(try compose()["services"] as? [String: Any])
        for name in ["kafka", "redis", "postgres"] {
            let service = try #require(services[name] as? [String: Any], "\(name) is missing")
            #expect(service["healthcheck"] != nil, "\(name) has no health check")
            #expect((service["volumes"] as? [String])?.isEmpty == false, "\(name) has no volume")
        }
        let kafka = try #require(services["kafka"] as? [String: Any])
        let environment = try #require(kafka["environment"] as? [String: Any])
        #expect(environment["KAFKA_PROCESS_ROLES"] as? String == "broker,controller", "Kafka runs in KRaft mode")
    }

    @Test func scoreboardEnvironmentIsWhatTheCodeReads() throws {
        let services = try #require(try compose()["services"] as? [String: Any])
        let initService = try #require(services["init"] as? [String: Any])
        let environment = try #require(initService["environment"] as? [String: Any]).mapValues { "\($0)" }
        let known: Set<String> = ["SCOREBOARD_KAFKA_BROKERS", "SCOREBOARD_REDIS_URL", "SCOREBOARD_POSTGRES_URL",
                                  "SCOREBOARD_POSTGRES_SCHEMA", "SCOREBOARD_LOG_LEVEL", "SCOREBOARD_HOME",
                                  "SCOREBOARD_JWKS_FILE", "SCOREBOARD_ACTION_TOKEN_KEYS", "SCOREBOARD_TOPIC_NAMESPACE",
                                  "SCOREBOARD_KAFKA_SESSION_TIMEOUT_MS", "SCOREBOARD_WORKER_GROUP",
                                  "SCOREBOARD_KAFKA_SASL_USERNAME", "SCOREBOARD_KAFKA_SASL_PASSWORD"]
        #expect(Set(environment.keys).isSubset(of: known), "\(environment.keys)")
        let settings = try ConnectionSettings(environment: environment)
        let secrets = try exampleSecrets()
        #expect(settings.kafkaBrokers == ["kafka:9092"])
        #expect(settings.kafkaAuthentication == .saslPlain(
            username: try #require(secrets["SCOREBOARD_KAFKA_SASL_USERNAME"]), password: try #require(secrets["SCOREBOARD_KAFKA_SASL_PASSWORD"])))
        #expect(settings.redis.host == "redis" && settings.redis.password == secrets["SCOREBOARD_REDIS_PASSWORD"])
        #expect(settings.postgres.host == "postgres" && settings.postgres.database == "scoreboard")
        #expect(settings.postgres.password == secrets["SCOREBOARD_POSTGRES_PASSWORD"])
        let dependsOn = try #require(initService["depends_on"] as? [String: Any])
        #expect(Set(dependsOn.keys) == ["kafka", "redis", "postgres"])
    }

    @Test func theThreeRolesRunAfterInitWithTheirCommands() throws {
        let services = try #require(try compose()["services"] as? [String: Any])
        for role in ["gateway", "worker", "push"] {
            let service = try #require(services[role] as? [String: Any], "\(role) is missing")
            #expect((service["command"] as? [String])?.first == role)
            let dependsOn = try #require(service["depends_on"] as? [String: Any])
            #expect(dependsOn.keys.contains("init"))
            let environment = try #require(service["environment"] as? [String: Any])
            #expect(environment["SCOREBOARD_KAFKA_BROKERS"] as? String == "kafka:9092")
            #expect(service["healthcheck"] != nil)
        }
        // The subcommands exist with these flags.
        for role in ["gateway", "worker", "push"] {
            #expect(throws: Never.self) { _ = try ScoreboardCommand.parseAsRoot([role, "--host", "0.0.0.0", "--port", "8080"]) }
        }
    }

    @Test func readmeHasExactlyTwoSetUpCommandsAndCIRunsTheTestOne() throws {
        let readme = try String(contentsOf: Self.root.appendingPathComponent("README.md"), encoding: .utf8)
        #expect(readme.contains("scripts/run.sh"))
        #expect(readme.contains("scripts/test.sh"))
        let ci = try String(contentsOf: Self.root.appendingPathComponent(".ci/run"), encoding: .utf8)
        #expect(ci.contains("scripts/test.sh"))
    }
}
