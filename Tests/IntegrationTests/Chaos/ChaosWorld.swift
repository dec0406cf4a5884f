import Foundation
import PostgresNIO
import ScoreboardCLI
import ScoreboardCore
import ScoreboardPostgres
import ScoreboardRedis
import Testing

/// How big the fault suite runs: QUICK by default (the whole suite in a few minutes on a 2-core CI box), FULL with
/// `SCOREBOARD_CHAOS_MODE=full` (`scripts/chaos.sh --full`): a million events for the worker-kill scenario and a
/// two-minute PostgreSQL outage.
enum ChaosMode {
    static let isFull = ProcessInfo.processInfo.environment["SCOREBOARD_CHAOS_MODE"] == "full"
    static var name: String { isFull ? "full" : "quick" }

    /// Events per second the generator aims at (it reports what it held).
    static var rate: Int { isFull ? 900 : 400 }
    /// How long the generator runs around a fault in scenarios that are not sized by an event count.
    static var trafficDuration: Duration { isFull ? .seconds(90) : .seconds(20) }
    /// The longest time the workers get to catch up once traffic stopped.
    static var catchUp: Duration { isFull ? .seconds(600) : .seconds(120) }
}

/// A ``ScorePathWorld`` (its own topics, schema, Redis database and keys) whose roles may be pointed at a private
/// Redis, PostgreSQL or broker instead of the shared local stack, with the readers the recount needs.
final class ChaosWorld: TestFixture, @unchecked Sendable {
    let base: ScorePathWorld
    let redisURL: String?
    let postgres: PostgresConfiguration
    let postgresURL: String?

    /// - Parameters:
    ///   - redis: a private Redis the roles use instead of the shared one (the boards are read from it).
    ///   - postgres: a private PostgreSQL cluster the roles use instead of the shared one.
    ///   - kafkaBrokers: a private broker.
    init(redisDatabase: Int, kafkaBrokers: String? = nil, redis: PrivateRedis? = nil, postgres: PrivatePostgres? = nil) async throws {
        base = try await ScorePathWorld(redisDatabase: redisDatabase, kafkaBrokers: kafkaBrokers)
        redisURL = redis?.url
        postgresURL = postgres?.url
        if let postgres {
            self.postgres = postgres.configuration(schema: base.schema)
        } else {
            var configuration = TestEnvironment.settings.postgres
            configuration.schema = base.schema
            self.postgres = configuration
        }
    }

    var namespace: String { base.namespace }
    var tag: Substring { base.namespace.dropLast() }

    var environment: [String: String] {
        var environment = base.environment
        if let redisURL { environment["SCOREBOARD_REDIS_URL"] = redisURL }
        if let postgresURL { environment["SCOREBOARD_POSTGRES_URL"] = postgresURL }
        return environment
    }

    func start(_ role: String, arguments: [String] = [], acceptsSIGTERM: Bool = false) async throws -> RoleProcess {
        var environment = environment
        // For a closer look at one role in a fault run, e.g. SCOREBOARD_CHAOS_WORKER_LOG_LEVEL=debug.
        if let level = ProcessInfo.processInfo.environment["SCOREBOARD_CHAOS_\(role.uppercased())_LOG_LEVEL"] {
            environment["SCOREBOARD_LOG_LEVEL"] = level
        }
        return try await RoleProcess(role, arguments: arguments, environment: environment, acceptsSIGTERM: acceptsSIGTERM)
    }

    /// A gateway whose per-address and per-user limits are out of the way of the generator (the catalog's own
    /// per-action limits still apply).
    func gateway(acceptsSIGTERM: Bool = false) async throws -> RoleProcess {
        try await start(
            "gateway", arguments: ["--per-ip-per-minute", "100000000", "--per-user-per-minute", "100000", "--per-flagged-user-per-minute", "100000"],
            acceptsSIGTERM: acceptsSIGTERM)
    }

    /// Runs a `scoreboard` command (`rebuild`, `topics apply`) against this world to its end.
    func command(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        try await runCommand(Repository.executable.path, arguments, environment: Repository.environment(environment))
    }

    /// A fresh Redis connection pool on the Redis the roles use (a new one after a restart of a private Redis).
    func redisReader() throws -> RedisConnectionPool {
        guard let redisURL else { return base.redis }
        return RedisConnectionPool(configuration: try RedisConfiguration(url: redisURL), logger: TestEnvironment.logger)
    }

    /// Every score of `board` in Redis.
    static func board(_ board: BoardKey, in redis: RedisConnectionPool) async throws -> [String: Int64] {
        let reply = try await redis.send(["ZRANGE", board.redisKey, "0", "-1", "WITHSCORES"])
        let items = reply.array ?? []
        var scores: [String: Int64] = [:]
        for index in stride(from: 0, to: items.count - 1, by: 2) {
            scores[items[index].string!] = Int64(Double(items[index + 1].string!)!)
        }
        return scores
    }

    /// How many events PostgreSQL applied (cheap, for polling).
    func appliedCount() async throws -> Int {
        let store = PostgresStore(configuration: postgres, logger: TestEnvironment.logger)
        return try await store.withRunningClient { store in
            for try await count in try await store.client.query("SELECT count(*)::bigint FROM score_events").decode(Int64.self) { return Int(count) }
            return 0
        }
    }

    /// What PostgreSQL holds for the run: the applied event ids and every member_totals row.
    func ledger() async throws -> Ledger {
        let store = PostgresStore(configuration: postgres, logger: TestEnvironment.logger)
        return try await store.withRunningClient { store in
            var ledger = Ledger()
            for try await (id, count) in try await store.client.query("SELECT event_id::text, 1 FROM score_events").decode((String, Int).self) {
                ledger.eventIDs[id, default: 0] += count
            }
            for try await (window, period, user, region, guild, points) in try await store.client.query(
                "SELECT board_window, period, user_id, region, guild, points FROM member_totals"
            ).decode((String, String, String, String, String, Int64).self) {
                ledger.memberTotals[MemberTotalKey(window: window, period: period, user: user, region: region, guild: guild)] = points
            }
            return ledger
        }
    }

    func tearDown() async {
        await base.tearDown()
        // A private PostgreSQL cluster goes away with its folder; on the shared one the world's schema was dropped.
    }
}

struct MemberTotalKey: Hashable, Sendable, CustomStringConvertible {
    var window: String
    var period: String
    var user: String
    var region: String
    var guild: String
    var description: String { "\(window)/\(period)/\(user)/\(region)/\(guild)" }
}

/// PostgreSQL's side of a run.
struct Ledger: Sendable {
    /// Applied events by id (a count above one would be a row applied twice; the primary key forbids it).
    var eventIDs: [String: Int] = [:]
    var memberTotals: [MemberTotalKey: Int64] = [:]
}
