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

    /// Prometheus scrapes each role on the port compose runs it on and loads the alert rules; Grafana gets the
    /// dashboard and the data source it names, and asks for its admin password from the env file.
    @Test func prometheusScrapesEveryRoleAndGrafanaShowsTheDashboard() throws {
        let services = try #require(try compose()["services"] as? [String: Any])
        let prometheus = try #require(services["prometheus"] as? [String: Any])
        let mounts = try #require(prometheus["volumes"] as? [String])
        for file in ["./analytics/prometheus.yml", "./analytics/alerts.yaml"] {
            let mount = try #require(mounts.first { $0.hasPrefix(file + ":") }, "\(file) is not mounted")
            #expect(FileManager.default.fileExists(atPath: Self.root.appendingPathComponent(String(file.dropFirst(2))).path), "\(mount)")
        }
        let config = try #require(try Yams.load(yaml: String(contentsOf: Self.root.appendingPathComponent("analytics/prometheus.yml"), encoding: .utf8)) as? [String: Any])
        #expect(config["rule_files"] as? [String] == ["/etc/prometheus/alerts.yaml"])
        #expect(mounts.contains { $0.hasSuffix(":/etc/prometheus/alerts.yaml:ro") })
        let jobs = try #require(config["scrape_configs"] as? [[String: Any]])
        for role in ["gateway", "worker", "push"] {
            let job = try #require(jobs.first { $0["job_name"] as? String == role }, "no scrape job for \(role)")
            let discovery = try #require((job["dns_sd_configs"] as? [[String: Any]])?.first)
            #expect(discovery["names"] as? [String] == [role])
            let command = try #require((services[role] as? [String: Any])?["command"] as? [String])
            let port = try #require(command.firstIndex(of: "--port").map { command[$0 + 1] })
            #expect(discovery["port"] as? Int == Int(port), "\(role) listens on \(port)")
        }

        let grafana = try #require(services["grafana"] as? [String: Any])
        let environment = try #require(grafana["environment"] as? [String: Any])
        #expect(environment["GF_SECURITY_ADMIN_PASSWORD"] as? String == (try exampleSecrets())["SCOREBOARD_GRAFANA_ADMIN_PASSWORD"])
        let grafanaMounts = try #require(grafana["volumes"] as? [String])
        #expect(grafanaMounts.contains("./analytics/grafana/provisioning:/etc/grafana/provisioning:ro"))
        #expect(grafanaMounts.contains("./analytics/grafana/dashboards:/var/lib/grafana/dashboards:ro"))
        let datasources = try #require(try Yams.load(yaml: String(
            contentsOf: Self.root.appendingPathComponent("analytics/grafana/provisioning/datasources/prometheus.yaml"), encoding: .utf8)) as? [String: Any])
        let uid = try #require((datasources["datasources"] as? [[String: Any]])?.first?["uid"] as? String)
        let dashboard = try Self.dashboard()
        for panel in dashboard where panel["type"] as? String != "row" {
            #expect((panel["datasource"] as? [String: Any])?["uid"] as? String == uid, "\(panel["title"] ?? "")")
        }
    }

    /// Every metric the dashboard and the alert rules read is one the code exports (or Hummingbird's, or
    /// Prometheus's `up`): a renamed metric must not leave an empty panel or an alert that can never fire.
    @Test func dashboardAndAlertsReadOnlyMetricsTheCodeExports() throws {
        var expressions = try Self.dashboard().flatMap { ($0["targets"] as? [[String: Any]] ?? []).compactMap { $0["expr"] as? String } }
        let alerts = try #require(try Yams.load(yaml: String(contentsOf: Self.root.appendingPathComponent("analytics/alerts.yaml"), encoding: .utf8)) as? [String: Any])
        for group in alerts["groups"] as? [[String: Any]] ?? [] {
            for rule in group["rules"] as? [[String: Any]] ?? [] { expressions.append(try #require(rule["expr"] as? String)) }
        }
        #expect(expressions.count > 20)
        let exported = try Self.metricNamesInSources()
        // Hummingbird's request metrics and Prometheus's own `up`.
        let external: Set<String> = ["hb_requests", "http_server_request_duration", "up"]
        #expect(Self.metricNames(in: #"sum by (job) (rate(hb_requests{code=~"5.."}[5m])) / max(up) > 0.05 and deriv(x_y[5m:30s]) > 0"#)
            == ["hb_requests", "up", "x_y"], "the expression reader itself")
        for expression in expressions {
            for name in Self.metricNames(in: expression) {
                let base = ["_bucket", "_count", "_sum"].reduce(name) { $0.hasSuffix($1) ? String($0.dropLast($1.count)) : $0 }
                #expect(exported.contains(base) || external.contains(base), "\(name) (in \(expression)) is not exported by any role")
            }
        }
    }

    static func dashboard() throws -> [[String: Any]] {
        let data = try Data(contentsOf: root.appendingPathComponent("analytics/grafana/dashboards/scoreboard.json"))
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        return try #require(json["panels"] as? [[String: Any]])
    }

    /// The metric names in a PromQL expression: what is left once strings, label matchers, ranges and `by (…)`
    /// groupings are taken out, and function calls (a name followed by `(`) and operators are skipped.
    static func metricNames(in expression: String) -> Set<String> {
        var text = expression
        text.replace(/"[^"]*"/, with: " ")
        text.replace(/\{[^}]*\}/, with: " ")
        text.replace(/\[[^\]]*\]/, with: " ")
        text.replace(/\b(by|without|on|ignoring)\s*\([^)]*\)/, with: " ")
        var names: Set<String> = []
        for match in text.matches(of: /([A-Za-z_][A-Za-z0-9_]*)(\s*\()?/) where match.2 == nil {
            let word = String(match.1)
            if ["and", "or", "unless", "bool"].contains(word) { continue }
            names.insert(word)
        }
        return names
    }

    /// Metric labels given to swift-metrics or the Prometheus registry anywhere in Sources/.
    static func metricNamesInSources() throws -> Set<String> {
        var names: Set<String> = []
        let sources = root.appendingPathComponent("Sources")
        let files = FileManager.default.enumerator(at: sources, includingPropertiesForKeys: nil)!.compactMap { $0 as? URL }.filter { $0.pathExtension == "swift" }
        let pattern = /(?:label|name): "([a-z_]+)"/
        for file in files {
            for match in try String(contentsOf: file, encoding: .utf8).matches(of: pattern) { names.insert(String(match.1)) }
        }
        return names
    }

    @Test func readmeHasExactlyTwoSetUpCommandsAndCIRunsTheTestOne() throws {
        let readme = try String(contentsOf: Self.root.appendingPathComponent("README.md"), encoding: .utf8)
        #expect(readme.contains("scripts/run.sh"))
        #expect(readme.contains("scripts/test.sh"))
        let ci = try String(contentsOf: Self.root.appendingPathComponent(".ci/run"), encoding: .utf8)
        #expect(ci.contains("scripts/test.sh"))
    }
}
