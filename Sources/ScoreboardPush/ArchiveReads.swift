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
        /// Readers waiting for a query that is already running ("board|query"): they share its answer instead of
        /// running it again or being refused (ten SSE clients opening one board that Redis does not hold).
        var waiting: [String: [CheckedContinuation<Result<BoardPage?, any Error>, Never>]] = [:]
        /// Queries run so far (what the tests count).
        var queriesRun = 0
    }

    private enum Lookup {
        case hit(BoardPage?)
        case run
        case join
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
        let key = board + "|" + query
        let lookup = try state.withLock { state throws -> Lookup in
            state.uses += 1
            if let hit = state.pages[board]?[query], now - hit.storedAt < limits.freshFor {
                state.pages[board]?[query]?.lastUse = state.uses
                return .hit(hit.page)
            }
            if state.waiting[key] != nil { return .join }
            guard state.queriesInFlight < limits.concurrentQueries else {
                throw Problem(.serverBusy, detail: "too many archive reads at once", retryAfter: 1)
            }
            state.queriesInFlight += 1
            state.queriesRun += 1
            state.waiting[key] = []
            return .run
        }
        switch lookup {
        case .hit(let page): return page
        case .join:
            let shared = await withCheckedContinuation { continuation in
                let ran = state.withLock { state -> Bool in
                    guard state.waiting[key] != nil else { return true }
                    state.waiting[key]!.append(continuation)
                    return false
                }
                // The query ended between the lookup and now: read again (from the cache, most likely).
                if ran { continuation.resume(returning: .failure(CancellationError())) }
            }
            switch shared {
            case .success(let page): return page
            case .failure(let error as Problem): throw error
            case .failure: return try await self.read(board: board, query: query, read)
            }
        case .run: break
        }
        let result: Result<BoardPage?, any Error>
        do { result = .success(try await read()) } catch let problem as Problem { result = .failure(problem) } catch {
            // PostgreSQL unreachable or failing: the reader retries later, it is not a server bug.
            result = .failure(Problem(.dependencyUnavailable, detail: "the standings archive does not answer", retryAfter: 1))
        }
        let waiters = state.withLock { state -> [CheckedContinuation<Result<BoardPage?, any Error>, Never>] in
            state.queriesInFlight -= 1
            return state.waiting.removeValue(forKey: key) ?? []
        }
        for waiter in waiters { waiter.resume(returning: result) }
        let page = try result.get()
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
