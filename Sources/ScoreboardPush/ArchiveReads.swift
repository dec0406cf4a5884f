import ScoreboardHTTP
import Synchronization

/// Bounds what reads of archived boards (PostgreSQL aggregations) can cost: a small least-recently-used cache of
/// answers, and at most `concurrentQueries` queries at once; past that a read fails fast with 503 `server-busy` and
/// Retry-After rather than queueing on the database. An answer is forgotten when the update feed reports a change of
/// its board (a late event in a closed period), and after `freshFor` in any case.
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
        /// Answers per board id, then per query.
        var pages: [String: [String: Cached]] = [:]
        var count = 0
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

    /// The cached answer of `query` on `board`, or `read`'s, which is then cached.
    /// - Throws: ``Problem`` `server-busy` when `concurrentQueries` are already running, `dependency-unavailable`
    ///   when `read` fails.
    func read(board: String, query: String, _ read: @Sendable () async throws -> BoardPage?) async throws -> BoardPage? {
        let now = ContinuousClock.now
        let cached = try state.withLock { state throws -> BoardPage?? in
            state.uses += 1
            if let hit = state.pages[board]?[query], now - hit.storedAt < limits.freshFor {
                state.pages[board]?[query]?.lastUse = state.uses
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
        do { page = try await read() } catch let problem as Problem { throw problem } catch {
            // PostgreSQL unreachable or failing: the reader retries later, it is not a server bug.
            throw Problem(.dependencyUnavailable, detail: "the standings archive does not answer", retryAfter: 1)
        }
        state.withLock { state in
            state.uses += 1
            if state.pages[board]?[query] == nil { state.count += 1 }
            state.pages[board, default: [:]][query] = Cached(page: page, storedAt: ContinuousClock.now, lastUse: state.uses)
            // Evicting the least recently used is a scan, but of a small, fixed number of entries.
            if state.count > limits.cachedPages {
                var oldest: (board: String, query: String, lastUse: Int)?
                for (board, queries) in state.pages {
                    for (query, cached) in queries where cached.lastUse < (oldest?.lastUse ?? .max) { oldest = (board, query, cached.lastUse) }
                }
                if let oldest {
                    state.pages[oldest.board]?[oldest.query] = nil
                    if state.pages[oldest.board]?.isEmpty == true { state.pages[oldest.board] = nil }
                    state.count -= 1
                }
            }
        }
        return page
    }

    /// Forgets the answers about `boards` (their standings changed: the feed saw an update of each).
    public func invalidate(boards: Set<String>) {
        state.withLock { state in
            for board in boards {
                if let removed = state.pages.removeValue(forKey: board) { state.count -= removed.count }
            }
        }
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
