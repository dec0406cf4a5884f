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
        return try #require(try Yams.load(yaml: text) as? [String: Any])
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
                                  "SCOREBOARD_KAFKA_SESSION_TIMEOUT_MS", "SCOREBOARD_WORKER_GROUP"]
        #expect(Set(environment.keys).isSubset(of: known), "\(environment.keys)")
        let settings = try ConnectionSettings(environment: environment)
        #expect(settings.kafkaBrokers == ["kafka:9092"])
        #expect(settings.redis.host == "redis")
        #expect(settings.postgres.host == "postgres" && settings.postgres.database == "scoreboard")
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
