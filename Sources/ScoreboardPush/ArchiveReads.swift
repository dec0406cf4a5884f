import ScoreboardHTTP
import Synchronization

/// Bounds what reads of archived boards (PostgreSQL aggregations) can cost: a small least-recently-used cache of
/// answers, kept for `freshFor` (a closed period's standings change only if late events arrive), and at most
/// `concurrentQueries` queries at once; past that a read fails fast with 503 `server-busy` and Retry-After rather
/// than queueing on the database.
public final class ArchiveReads: Sendable {
    public struct Limits: Sendable, Equatable {
        /// Answers kept.
        public var cachedPages = 512
        public var freshFor: Duration = .seconds(30)
        public var concurrentQueries = 4

        public init() {}
    }

    struct Cached {
        var page: BoardPage?
        var storedAt: ContinuousClock.Instant
        var lastUse: Int
    }

    struct State {
        var pages: [String: Cached] = [:]
        var uses = 0
        var queriesInFlight = 0
        /// Queries run so far (what the tests count).
        var queriesRun = 0
    }

    public let limits: Limits
    private let state = Mutex(State())

    public init(limits: Limits) {
        self.limits = limits
    }

    /// The cached answer for `key`, or `query`'s, which is then cached.
    /// - Throws: ``Problem`` `server-busy` when `concurrentQueries` are already running; what `query` throws.
    func read(_ key: String, query: @Sendable () async throws -> BoardPage?) async throws -> BoardPage? {
        let now = ContinuousClock.now
        let cached = try state.withLock { state throws -> BoardPage?? in
            state.uses += 1
            if let hit = state.pages[key], now - hit.storedAt < limits.freshFor {
                state.pages[key]?.lastUse = state.uses
                return .some(hit.page)
            }
            guard state.queriesInFlight < limits.concurrentQueries else {
                throw Problem(.serverBusy, detail: "too many archive reads at once", retryAfter: 1)
            }
            state.queriesInFlight += 1
            state.queriesRun += 1
            return nil
        }
        if let cached { return cached }
        defer { state.withLock { $0.queriesInFlight -= 1 } }
        let page: BoardPage?
        do { page = try await query() } catch let problem as Problem { throw problem } catch {
            // PostgreSQL unreachable or failing: the reader retries later, it is not a server bug.
            throw Problem(.dependencyUnavailable, detail: "the standings archive does not answer", retryAfter: 1)
        }
        state.withLock { state in
            state.uses += 1
            state.pages[key] = Cached(page: page, storedAt: ContinuousClock.now, lastUse: state.uses)
            // Evicting the least recently used is a scan, but of a small, fixed number of entries.
            if state.pages.count > limits.cachedPages, let oldest = state.pages.min(by: { $0.value.lastUse < $1.value.lastUse }) {
                state.pages[oldest.key] = nil
            }
        }
        return page
    }

    /// Archive queries run so far.
    public var queriesRun: Int { state.withLock { $0.queriesRun } }
}

/// Region and guild values known to have scores, remembered so each costs one Redis lookup per process. Bounded:
/// past `capacity` values nothing more is remembered (each further lookup asks Redis again).
final class KnownDimensionValues: Sendable {
    let capacity: Int
    private let values = Mutex<Set<String>>([])

    init(capacity: Int = 100_000) { self.capacity = capacity }

    func contains(_ id: String) -> Bool { values.withLock { $0.contains(id) } }

    func insert(_ id: String) {
        values.withLock { values in
            if values.count < capacity { values.insert(id) }
        }
    }
}
