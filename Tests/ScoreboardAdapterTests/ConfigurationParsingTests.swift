import ScoreboardCLI
@testable import ScoreboardPostgres
import ScoreboardRedis
import Testing

@Suite struct ConfigurationParsingTests {
    @Test func redisURLs() throws {
        let full = try RedisConfiguration(url: "redis://:s3cret@cache.internal:6380/2")
        #expect(full.host == "cache.internal" && full.port == 6380 && full.password == "s3cret" && full.database == 2)
        let plain = try RedisConfiguration(url: "redis://127.0.0.1")
        #expect(plain.port == 6379 && plain.password == nil && plain.database == 0)
        for bad in ["http://x", "redis://", "redis://host:0", "redis://host:99999", "redis://host/abc"] {
            #expect(throws: RedisError.self, "\(bad)") { try RedisConfiguration(url: bad) }
        }
    }

    @Test func postgresURLs() throws {
        let url = try PostgresConfiguration(url: "postgres://app:p%40ss@db:6543/scores?sslmode=require&schema=s1")
        #expect(url.host == "db" && url.port == 6543 && url.username == "app" && url.password == "p@ss")
        #expect(url.database == "scores" && url.tls == .require && url.schema == "s1")
        for bad in ["mysql://a@b/c", "postgres://host:5432", "postgres://host:x/db", "postgres://u@h/db?sslmode=sometimes"] {
            #expect(throws: StorageError.self, "\(bad)") { try PostgresConfiguration(url: bad) }
        }
    }

    @Test func flagsWinOverEnvironmentWhichWinsOverDefaults() throws {
        let environment = ["SCOREBOARD_KAFKA_BROKERS": "k1:9092,k2:9092", "SCOREBOARD_REDIS_URL": "redis://r:1"]
        let fromEnvironment = try ConnectionSettings(environment: environment)
        #expect(fromEnvironment.kafkaBrokers == ["k1:9092", "k2:9092"])
        #expect(fromEnvironment.redis.host == "r")
        #expect(fromEnvironment.postgres.port == 15432)  // the local stack's default
        let fromFlags = try ConnectionSettings(kafkaBrokers: "f:1", redisURL: "redis://f:2", environment: environment)
        #expect(fromFlags.kafkaBrokers == ["f:1"] && fromFlags.redis.port == 2)
    }

    @Test func migrationScriptsSplitIntoStatements() {
        let script = """
            -- a comment; with a semicolon
            CREATE TABLE a (x text DEFAULT 'it''s; fine');
            /* block; comment */ CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;
            SELECT "odd;name" FROM a WHERE x = $1;
            -- trailing comment
            """
        let statements = SQLScript.statements(script)
        #expect(statements.count == 3)
        #expect(statements[0].hasSuffix("DEFAULT 'it''s; fine')"))
        #expect(statements[1].contains("$body$ SELECT 1; $body$"))
        #expect(statements[2] == #"SELECT "odd;name" FROM a WHERE x = $1"#)
    }

    @Test func bundledMigrationsAreOrderedAndVersioned() throws {
        let migrations = try Migration.bundled()
        #expect(!migrations.isEmpty)
        #expect(migrations.map(\.version) == migrations.map(\.version).sorted())
        #expect(migrations.first?.version == 1)
    }
}
