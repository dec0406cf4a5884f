import Logging
import ScoreboardCore
import Synchronization

/// What a worker knows about its own progress: for `/health/ready`, `/metrics` and the outage log lines.
///
/// A worker never exits because PostgreSQL, Redis or the broker went away: it keeps the batch in hand, retries it with
/// capped backoff, and says here why it cannot make progress. The outage is logged once when it starts (and again
/// only if another dependency becomes the cause) and once when it ends.
public final class WorkerHealth: Sendable {
    public struct Snapshot: Sendable {
        public var assignedPartitions: [Int32] = []
        public var batches = 0
        public var events = 0
        /// Why the batch in hand cannot be applied right now, while it is retried.
        public var outage: Outage?
        /// Why the assignment could not be set up (for example the topic does not exist yet).
        public var assignmentProblem: String?
        /// When the last batch committed (monotonic, for the stall check) and its wall-clock time (for `/metrics`).
        public var lastCommit: ContinuousClock.Instant?
        public var lastCommitAt: Timestamp?
        /// Messages behind the log end, per owned partition, at the last check.
        public var lag: [Int32: Int64] = [:]
        /// When the worker started consuming: a fresh worker is not stalled before it had time to commit.
        public var startedAt: ContinuousClock.Instant?
        /// Dependencies whose last probe (between batches) failed.
        public var unreachable: Set<Dependency> = []
    }

    /// A dependency the worker cannot reach, since when, and how often the batch was tried.
    public struct Outage: Sendable {
        public var dependency: Dependency
        public var since: ContinuousClock.Instant
        public var attempts: Int
    }

    /// The servers a batch needs. Readiness names these, never an address or a raw error (those go to the log).
    public enum Dependency: String, Sendable, Hashable {
        case postgres, redis, kafka
        /// A batch that did not finish within its deadline.
        case deadline

        init(classifying error: any Error) {
            switch error {
            case let failure as any ServerFailure:
                switch failure.server {
                case .postgres: self = .postgres
                case .redis: self = .redis
                case .kafka: self = .kafka
                }
            case is TimeoutError: self = .deadline
            // PostgresNIO's errors (PSQLError, the pool's ConnectionPoolError, transaction errors) are not ours to
            // extend; anything else raised inside the ledger's transaction is PostgreSQL's.
            default: self = .postgres
            }
        }
    }

    private let state = Mutex(Snapshot())
    /// A worker with lag that has committed nothing for this long reports itself stalled.
    let stallAfter: Duration
    private let logger: Logger

    init(stallAfter: Duration, logger: Logger) {
        self.stallAfter = stallAfter
        self.logger = logger
    }

    public var snapshot: Snapshot { state.withLock { $0 } }

    /// Reasons the worker is not ready (empty when it is): each a dependency name and a short sentence.
    public func readinessProblems(now: ContinuousClock.Instant = .now) -> [String: String] {
        let snapshot = self.snapshot
        var problems: [String: String] = [:]
        if let outage = snapshot.outage {
            let seconds = (now - outage.since).components.seconds
            problems[outage.dependency.rawValue] = outage.dependency == .deadline
                ? "batches do not finish within their deadline (\(outage.attempts) attempts in \(seconds) s)"
                : "unavailable for \(seconds) s; the batch in hand is retried (\(outage.attempts) attempts)"
        }
        for dependency in snapshot.unreachable where problems[dependency.rawValue] == nil {
            problems[dependency.rawValue] = "unreachable"
        }
        if let problem = snapshot.assignmentProblem { problems["assignment"] = problem }
        let lag = snapshot.lag.values.reduce(0, +)
        let sinceCommit = snapshot.lastCommit.map { now - $0 }
        if lag > 0, problems.isEmpty, sinceCommit.map({ $0 > stallAfter }) ?? true,
            let started = snapshot.startedAt, now - started > stallAfter
        {
            problems["progress"] = "stalled: \(lag) messages behind and nothing committed for \(stallAfter)"
        }
        return problems
    }

    func markStarted(now: ContinuousClock.Instant = .now) {
        state.withLock { $0.startedAt = now }
    }

    // MARK: - Updates from the worker

    func assigned(_ partitions: [Int32]) {
        state.withLock { $0.assignedPartitions = partitions.sorted() }
    }

    func assignmentFailed(_ problem: String?) {
        state.withLock { $0.assignmentProblem = problem }
    }

    func committed(events: Int, now: ContinuousClock.Instant = .now) {
        state.withLock { state in
            state.batches += 1
            state.events += events
            state.lastCommit = now
            state.lastCommitAt = Timestamp.now()
        }
    }

    /// Records a probe's outcome; logs when a dependency becomes unreachable and when it answers again.
    func probed(_ dependency: Dependency, error: (any Error)?) {
        let changed = state.withLock { state in
            error == nil ? state.unreachable.remove(dependency) != nil : state.unreachable.insert(dependency).inserted
        }
        guard changed else { return }
        if let error {
            logger.error("dependency unreachable", metadata: ["scoreboard.dependency": "\(dependency.rawValue)", "error": "\(error)"])
        } else {
            logger.info("dependency reachable again", metadata: ["scoreboard.dependency": "\(dependency.rawValue)"])
        }
    }

    func updateLag(_ lag: [Int32: Int64]) {
        state.withLock { $0.lag = lag }
    }

    /// Records a failed attempt; logs when an outage starts or its cause changes, and at debug level otherwise.
    func attemptFailed(_ error: any Error, now: ContinuousClock.Instant = .now) {
        let dependency = Dependency(classifying: error)
        let isNew = state.withLock { state -> Bool in
            guard var outage = state.outage else {
                state.outage = Outage(dependency: dependency, since: now, attempts: 1)
                return true
            }
            // The same outage, perhaps with a clearer cause now (a deadline first, then the pool's own error): it
            // keeps its start, and a new cause is logged.
            outage.attempts += 1
            let changed = outage.dependency != dependency
            outage.dependency = dependency
            state.outage = outage
            return changed
        }
        if isNew {
            logger.error("dependency unavailable: retrying the batch in hand until it returns", metadata: [
                "scoreboard.dependency": "\(dependency.rawValue)", "error": "\(error)",
            ])
        } else {
            logger.debug("batch attempt failed", metadata: ["scoreboard.dependency": "\(dependency.rawValue)", "error": "\(error)"])
        }
    }

    /// Records a successful step after failed attempts: the outage is over, if it is one of `ending` (`nil`: any).
    /// The ledger step succeeding says nothing about Redis or the broker, which only the outputs step uses.
    func attemptSucceeded(ending: Set<Dependency>? = nil, now: ContinuousClock.Instant = .now) {
        let ended = state.withLock { state -> Outage? in
            guard let outage = state.outage, ending.map({ $0.contains(outage.dependency) }) ?? true else { return nil }
            state.outage = nil
            return outage
        }
        if let ended {
            logger.info("dependency recovered: processing resumed", metadata: [
                "scoreboard.dependency": "\(ended.dependency.rawValue)", "outage.seconds": "\((now - ended.since).components.seconds)",
                "outage.attempts": "\(ended.attempts)",
            ])
        }
    }
}
