import Logging
import ScoreboardCore
@testable import ScoreboardKafka
import ScoreboardRedis
@testable import ScoreboardWorker
import Testing

@Suite struct WorkerHealthTests {
    let start = ContinuousClock.now

    func health() -> WorkerHealth {
        let health = WorkerHealth(stallAfter: .seconds(30), logger: Logger(label: "test"))
        health.markStarted(now: start)
        return health
    }

    @Test func anOutageIsNamedByItsDependencyAndEndsWithTheFirstSuccess() {
        let health = health()
        #expect(health.readinessProblems(now: start).isEmpty)
        health.attemptFailed(RedisError(code: .connection, reason: "connect to 10.0.0.1:6379: Connection refused"), now: start)
        health.attemptFailed(RedisError(code: .connection, reason: "again"), now: start + .seconds(1))
        let problems = health.readinessProblems(now: start + .seconds(3))
        #expect(Set(problems.keys) == ["redis"])
        // Readiness says what is down, never where (no address, no raw error).
        #expect(!problems["redis"]!.contains("10.0.0.1"))
        #expect(problems["redis"]!.contains("2 attempts"))
        #expect(health.snapshot.outage?.since == start)

        // Another cause while the batch still fails: the same outage, named for its latest cause, since its start.
        health.attemptFailed(KafkaError(code: .messageDelivery, reason: "Message timed out"), now: start + .seconds(4))
        #expect(Set(health.readinessProblems(now: start + .seconds(4)).keys) == ["kafka"])
        #expect(health.snapshot.outage?.since == start)
        #expect(health.snapshot.outage?.attempts == 3)
        health.attemptSucceeded(now: start + .seconds(5))
        #expect(health.readinessProblems(now: start + .seconds(5)).isEmpty)
    }

    @Test func errorsAreClassifiedByTheServerThatRaisedThem() {
        struct SomePostgresError: Error {}
        #expect(WorkerHealth.Dependency(classifying: RedisError(code: .server, reason: "x")) == .redis)
        #expect(WorkerHealth.Dependency(classifying: KafkaError(code: .messageDelivery, reason: "x")) == .kafka)
        #expect(WorkerHealth.Dependency(classifying: TimeoutError(duration: .seconds(1))) == .deadline)
        #expect(WorkerHealth.Dependency(classifying: SomePostgresError()) == .postgres)
    }

    @Test func lagWithoutCommitsForTooLongIsAStall() {
        let health = health()
        health.updateLag([0: 5, 1: 0])
        // A fresh worker has time to commit.
        #expect(health.readinessProblems(now: start + .seconds(10)).isEmpty)
        #expect(health.readinessProblems(now: start + .seconds(31))["progress"] != nil)
        health.committed(events: 3, now: start + .seconds(31))
        #expect(health.readinessProblems(now: start + .seconds(40)).isEmpty)
        #expect(health.readinessProblems(now: start + .seconds(62))["progress"] != nil)
        // No lag: an idle worker that commits nothing is fine.
        health.updateLag([0: 0, 1: 0])
        #expect(health.readinessProblems(now: start + .seconds(120)).isEmpty)
    }

    @Test func assignmentProblemsShowUntilCleared() {
        let health = health()
        health.assignmentFailed("the score-events topic cannot be described")
        #expect(health.readinessProblems(now: start)["assignment"] != nil)
        health.assignmentFailed(nil)
        #expect(health.readinessProblems(now: start).isEmpty)
    }
}
