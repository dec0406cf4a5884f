import Logging
import Metrics
import NIOCore
import ScoreboardCore
import ScoreboardHTTP
import Synchronization

/// The push gateway's memory of its hot boards: each one's ranking (``BoardRanking``), kept current from the updates
/// the gateway already consumes, so that top N, around-me and standing are answered without a round trip, and their
/// encoded answers are reused until the board changes.
///
/// Redis stays the source of truth. A board is taken into memory when it is first read (that read, and every read
/// until the copy is in, goes to Redis as before); it is read from Redis once (``LiveBoards/page(of:offset:limit:)``
/// from place 0), and every update read after that load began is applied on top of it, in log order. Totals are
/// absolute, so an update that the copy already reflects sets the same value again. What memory answers is therefore
/// Redis as of the position the gateway has read in the updates log. A board leaves memory, and is read again from
/// Redis (resynchronised), when that chain could have broken:
/// - a *gap*: a partition's offsets jump (an update was not seen) or go back; the boards of that partition (and those
///   whose partition is not known yet) are dropped and loaded again;
/// - a new incarnation of the updates log, or a new assignment of its partitions: every board is dropped;
/// - the update source stops: memory answers nothing more;
/// - its Redis key's expiry (``LeaderboardCatalog/redisExpiry(of:)``) has passed: Redis no longer holds it;
/// - it was loaded `reloadAfter` ago: it is loaded again in the background (a change made without an update, such as
///   a `scoreboard rebuild`, shows within that time).
///
/// A board is only loaded once a message has been read from its partition (from every partition while its partition
/// is not known): before that, the consumer's start position may not be fixed yet, and updates written between the load
/// and that position would be missed.
///
/// Memory is bounded: at most `maximumBoards` boards and `maximumMembers` members in all (about 150 bytes each with
/// its index, so 2 million members are some 300 MB), a board larger than `maximumMembersPerBoard` is never held, and
/// past a bound the boards read least recently are evicted. Encoded answers are bounded apart (`maximumAnswerBytes`,
/// 64 MB; `maximumStandingAnswers`), and so are the placements kept for standing (`maximumUsersWithPlacements`).
public final class BoardMemory: Sendable {
    public struct Limits: Sendable, Equatable {
        public var maximumBoards = 1_000
        public var maximumMembers = 2_000_000
        public var maximumMembersPerBoard = 500_000
        /// A held board is read from Redis again this long after its last load.
        public var reloadAfter: Duration = .seconds(60)
        /// Encoded answers kept per board (cleared whenever the board changes), and their bytes in all (past it,
        /// every board's are cleared at once).
        public var answersPerBoard = 256
        public var maximumAnswerBytes = 64 << 20
        /// Encoded standing answers kept (past it, all are forgotten at once).
        public var maximumStandingAnswers = 20_000
        /// Users whose placements (the regions and guilds they scored under, per period) are kept for standing
        /// queries; past it, all are forgotten at once.
        public var maximumUsersWithPlacements = 100_000
        /// `false`: every query goes to Redis, as before this memory existed.
        public var isEnabled = true

        public init() {}
    }

    /// One board in memory.
    struct Held {
        var ranking: BoardRanking
        /// Whether Redis has the key (a board absent when loaded is held too: an update creates it, as `ZADD` does).
        var exists: Bool
        /// Incremented by every change: what an encoded answer is valid for.
        var version = 0
        var loadedAt: ContinuousClock.Instant
        var expiry: Timestamp?
        var lastRead: Int
        var answers: [String: ByteBuffer] = [:]
        var answerBytes = 0

        var weight: Int { max(1, ranking.count) }
    }

    /// A load in flight: the changes read since it began, applied once Redis's answer is in.
    struct Loading {
        var token: Int
        var changes: [[BoardChanges.Member]] = []
    }

    struct State {
        var held: [BoardKey: Held] = [:]
        var loading: [BoardKey: Loading] = [:]
        /// Boards asked for and not yet taken by the loader.
        var wanted: Set<BoardKey> = []
        /// Boards that were too large, or whose load failed, and when they may be tried again.
        var notBefore: [BoardKey: ContinuousClock.Instant] = [:]
        var members = 0
        /// Bytes of the encoded answers kept, over all boards.
        var answerBytes = 0
        var reads = 0
        var tokens = 0
        var isActive = false
        var assigned: Set<Int32> = []
        /// Partitions a message has been read from since the assignment (or the last new incarnation).
        var lastOffsets: [Int32: Int64] = [:]
        /// The partition each board stream is keyed to, as updates showed it. Bounded like the held boards' streams.
        var partitions: [String: Int32] = [:]
        /// Drops and loads so far (what tests and metrics read).
        var resyncs = 0
        var loads = 0
        /// Per user, per period (`window|period`), the regions and guilds they scored under, as the archive answered.
        var placements: [String: [String: [MemberPlacement]]] = [:]
        /// Reads of a user's placements in flight, and whether an update of the user came meanwhile (then what they
        /// read may be older than it, and is not kept).
        var placementReads: [String: (count: Int, isStale: Bool)] = [:]
        /// Encoded standing answers per user: valid while the periods are the same and every board is at the version
        /// it was read at.
        var standings: [String: (periods: [String], versions: [BoardKey: Int], body: ByteBuffer)] = [:]
        /// Advanced whenever what memory knew of some user's placements is forgotten: a standing read across such a
        /// change is not kept.
        var placementEpoch = 0

        mutating func drop(_ board: BoardKey) {
            if let removed = held.removeValue(forKey: board) {
                members -= removed.weight
                answerBytes -= removed.answerBytes
            }
        }

        mutating func dropAll() {
            held = [:]
            loading = [:]
            members = 0
            answerBytes = 0
            forgetPlacements()
        }

        mutating func forgetPlacements() {
            placements = [:]
            standings = [:]
            placementEpoch += 1
            for user in placementReads.keys { placementReads[user]!.isStale = true }
        }

        /// An update of `user`: what memory knows of where they scored may have grown.
        mutating func forgetPlacements(of user: String) {
            var known = placements.removeValue(forKey: user) != nil
            known = standings.removeValue(forKey: user) != nil || known
            if placementReads[user] != nil {
                placementReads[user]!.isStale = true
                known = true
            }
            if known { placementEpoch += 1 }
        }

        func mayLoad(_ board: BoardKey) -> Bool {
            guard isActive, !assigned.isEmpty else { return false }
            if let partition = partitions[board.streamID] { return lastOffsets[partition] != nil }
            return hasReadEveryPartition
        }

        /// Whether every update from now on is seen: a message of every assigned partition has been read.
        var hasReadEveryPartition: Bool { isActive && !assigned.isEmpty && assigned.allSatisfy { lastOffsets[$0] != nil } }
    }

    public let limits: Limits
    let catalog: LeaderboardCatalog
    let now: @Sendable () -> Timestamp
    let logger: Logger
    private let state = Mutex(State())
    private let requests: AsyncStream<BoardKey>
    private let requestInput: AsyncStream<BoardKey>.Continuation

    public init(limits: Limits = .init(), catalog: LeaderboardCatalog, logger: Logger, now: @escaping @Sendable () -> Timestamp = { Timestamp.now() }) {
        self.limits = limits
        self.catalog = catalog
        self.logger = logger
        self.now = now
        (requests, requestInput) = AsyncStream.makeStream(of: BoardKey.self, bufferingPolicy: .bufferingNewest(4_096))
    }

    // MARK: - Reads

    /// What memory holds of a board for one query.
    enum Answer<Value> {
        /// Not in memory (or not current): read Redis. The board has been asked for.
        case notHeld
        /// The encoded answer of this query, unchanged since it was stored.
        case encoded(ByteBuffer)
        /// Computed from the ranking; `version` is what to store its encoding with.
        case computed(Value, version: Int)
    }

    /// Reads `board` from memory: a stored encoding of `query` (when `query` is given), else `compute`'s answer from
    /// the ranking; `compute` gets `nil` when Redis has no such key. Asks for the board when it is not held.
    func read<Value>(_ board: BoardKey, query: String?, _ compute: (BoardRanking?) -> Value) -> Answer<Value> {
        guard limits.isEnabled else { return .notHeld }
        let now = now()
        let clock = ContinuousClock.now
        let (answer, reload): (Answer<Value>, Bool) = state.withLock { state in
            guard state.isActive, let held = state.held[board] else { return (.notHeld, true) }
            if let expiry = held.expiry, expiry <= now {
                state.drop(board)
                return (.notHeld, false)
            }
            state.reads += 1
            state.held[board]!.lastRead = state.reads
            let reload = clock - held.loadedAt > limits.reloadAfter && state.loading[board] == nil
            if let query, let body = held.answers[query] { return (.encoded(body), reload) }
            return (.computed(compute(held.exists ? held.ranking : nil), version: held.version), reload)
        }
        if reload { want(board) }
        return answer
    }

    /// `member`'s placement on each of `boards` that memory holds (`nil`: held, and the member is not on it), with
    /// the version each board was read at; the boards not held are left out, and asked for. One lock for all of them:
    /// what standing reads.
    func placements(of member: String, on boards: [BoardKey]) -> (found: [BoardKey: LivePlacement?], versions: [BoardKey: Int]) {
        guard limits.isEnabled else { return ([:], [:]) }
        let now = now()
        let clock = ContinuousClock.now
        let (found, versions, missing) = state.withLock { state -> ([BoardKey: LivePlacement?], [BoardKey: Int], [BoardKey]) in
            guard state.isActive else { return ([:], [:], []) }
            var found: [BoardKey: LivePlacement?] = [:]
            var versions: [BoardKey: Int] = [:]
            var missing: [BoardKey] = []
            for board in boards {
                guard let held = state.held[board], held.expiry.map({ $0 > now }) ?? true else {
                    missing.append(board)
                    continue
                }
                // Due for its periodic reload: asked for, and answered from memory meanwhile.
                if clock - held.loadedAt > limits.reloadAfter && state.loading[board] == nil { missing.append(board) }
                state.reads += 1
                state.held[board]!.lastRead = state.reads
                found[board] = .some(held.exists ? held.ranking.placement(of: member) : nil)
                versions[board] = held.version
            }
            return (found, versions, missing)
        }
        for board in missing { want(board) }
        return (found, versions)
    }

    /// The kept standing answer of `user` for these periods, if every board it read is unchanged; and the epoch to
    /// store a new one with (``storeStanding(_:of:periods:versions:epoch:)``).
    func standingAnswer(of user: String, periods: [String]) -> (body: ByteBuffer?, epoch: Int) {
        guard limits.isEnabled else { return (nil, 0) }
        let now = now()
        return state.withLock { state in
            guard state.isActive, let kept = state.standings[user], kept.periods == periods else { return (nil, state.placementEpoch) }
            for (board, version) in kept.versions {
                guard let held = state.held[board], held.version == version, held.expiry.map({ $0 > now }) ?? true else {
                    state.standings[user] = nil
                    return (nil, state.placementEpoch)
                }
            }
            return (kept.body, state.placementEpoch)
        }
    }

    /// Keeps a standing answer read from memory alone (`versions`: every board it read), unless some user's
    /// placements were forgotten since `epoch` (an update of this user may have come meanwhile).
    func storeStanding(_ body: ByteBuffer, of user: String, periods: [String], versions: [BoardKey: Int], epoch: Int) {
        state.withLock { state in
            guard state.isActive, state.placementEpoch == epoch, state.placements[user] != nil else { return }
            guard versions.allSatisfy({ state.held[$0.key]?.version == $0.value }) else { return }
            if state.standings.count >= limits.maximumStandingAnswers { state.standings = [:] }
            state.standings[user] = (periods, versions, body)
        }
    }

    /// Keeps `body`, the encoding of `query` on `board`, while the board stays at `version`.
    func store(_ body: ByteBuffer, board: BoardKey, query: String, version: Int) {
        state.withLock { state in
            guard state.held[board]?.version == version else { return }
            if state.held[board]!.answers.count >= limits.answersPerBoard {
                state.answerBytes -= state.held[board]!.answerBytes
                state.held[board]!.answers = [:]
                state.held[board]!.answerBytes = 0
            }
            if state.answerBytes + body.readableBytes > limits.maximumAnswerBytes {
                for key in state.held.keys {
                    state.held[key]!.answers = [:]
                    state.held[key]!.answerBytes = 0
                }
                state.answerBytes = 0
            }
            let replaced = state.held[board]!.answers.updateValue(body, forKey: query)?.readableBytes ?? 0
            state.held[board]!.answerBytes += body.readableBytes - replaced
            state.answerBytes += body.readableBytes - replaced
        }
    }

    /// Asks the loader for `board` (once, until it is taken).
    func want(_ board: BoardKey) {
        // A closed period past its retention is not in Redis: nothing to load (its reads go to the archive).
        if let expiry = catalog.redisExpiry(of: board), expiry <= now() { return }
        let isNew = state.withLock { state -> Bool in
            guard state.isActive else { return false }
            if let until = state.notBefore[board] {
                guard ContinuousClock.now >= until else { return false }
                state.notBefore[board] = nil
            }
            return state.wanted.insert(board).inserted
        }
        if isNew { requestInput.yield(board) }
    }

    /// Boards held, members held, loads and resynchronisations so far.
    var statistics: (boards: Int, members: Int, loads: Int, resyncs: Int) {
        state.withLock { ($0.held.count, $0.members, $0.loads, $0.resyncs) }
    }

    /// Bytes of the encoded answers kept.
    var answerBytes: Int { state.withLock { $0.answerBytes } }

    /// Whether `board` was found too large, or failed to load, and is not asked for again yet.
    func isRefused(_ board: BoardKey) -> Bool { state.withLock { $0.notBefore[board] != nil } }

    /// Whether `board` is in memory and current.
    func holds(_ board: BoardKey) -> Bool { state.withLock { $0.isActive && $0.held[board] != nil } }

    // MARK: - Placements

    /// Where `user` scored in each of `periods` (`window|period` keys), as far as memory knows; when some are
    /// missing, `isReading` is true and the caller must end the read with ``endPlacementRead(of:read:)``, giving what
    /// it read of them (or `nil` when the read failed).
    func placements(of user: String, periods: [String]) -> (known: [String: [MemberPlacement]], isReading: Bool) {
        guard limits.isEnabled else { return ([:], false) }
        return state.withLock { state in
            guard state.hasReadEveryPartition else { return ([:], false) }
            let cached = state.placements[user] ?? [:]
            var known: [String: [MemberPlacement]] = [:]
            for period in periods { if let placements = cached[period] { known[period] = placements } }
            guard known.count < periods.count else { return (known, false) }
            state.placementReads[user, default: (0, false)].count += 1
            return (known, true)
        }
    }

    /// Ends a read that ``placements(of:periods:)`` began, keeping what was read unless an update of the user came
    /// meanwhile. Only `periods` are kept (earlier periods are forgotten).
    func endPlacementRead(of user: String, periods: [String], read: [String: [MemberPlacement]]?) {
        state.withLock { state in
            guard var flight = state.placementReads[user] else { return }
            flight.count -= 1
            state.placementReads[user] = flight.count == 0 ? nil : flight
            guard let read, !flight.isStale, state.hasReadEveryPartition else { return }
            if state.placements.count >= limits.maximumUsersWithPlacements { state.placements = [:] }
            var kept: [String: [MemberPlacement]] = [:]
            let cached = state.placements[user] ?? [:]
            for period in periods { kept[period] = read[period] ?? cached[period] }
            state.placements[user] = kept
        }
    }

    // MARK: - Updates

    /// Applies one event of the updates log, before the feed sees it (so an answer is never older than a stream's).
    func observe(_ event: UpdateSourceEvent) {
        switch event {
        case .assigned(let partitions):
            state.withLock { state in
                state.dropAll()
                state.assigned = Set(partitions)
                state.lastOffsets = [:]
                state.isActive = true
            }
        case .newIncarnation:
            state.withLock { state in
                state.resyncs += state.held.count
                state.dropAll()
                state.lastOffsets = [:]
            }
            logger.info("board memory dropped: the updates log is a new incarnation")
        case .updates(let updates):
            for update in updates {
                apply(update.update.changes, sequence: update.update.sequence, partition: update.partition)
            }
        }
    }

    /// Applies the changes of one board, read at `sequence` (its offset) on `partition`: to the held copy, and to a
    /// load in flight. A jump in the partition's offsets is a gap: its boards are dropped and loaded again.
    public func apply(_ changes: BoardChanges, sequence: Int64, partition: Int32) {
        let board = changes.boardKey
        let reload = state.withLock { state -> [BoardKey] in
            var dropped: [BoardKey] = []
            if let last = state.lastOffsets[partition], sequence != last + 1 {
                // Offsets of one partition are consecutive: a jump means updates were not seen, a step back that
                // they are seen again out of order. Either way the copies of this partition's boards may be wrong.
                for (key, _) in state.held where (state.partitions[key.streamID] ?? partition) == partition {
                    state.drop(key)
                    dropped.append(key)
                }
                for (key, _) in state.loading where (state.partitions[key.streamID] ?? partition) == partition {
                    state.loading[key] = nil
                    dropped.append(key)
                }
                state.resyncs += dropped.count
                // The missed updates may have placed users anywhere.
                state.forgetPlacements()
            }
            state.lastOffsets[partition] = sequence
            if state.partitions[changes.streamID] == nil, state.partitions.count < 100_000 { state.partitions[changes.streamID] = partition }
            if !state.placements.isEmpty || !state.placementReads.isEmpty || !state.standings.isEmpty {
                for member in changes.members { state.forgetPlacements(of: member.userID) }
            }
            if state.loading[board] != nil { state.loading[board]!.changes.append(changes.members) }
            // Taken out of the dictionary while it changes, so that the ranking is changed in place, not copied.
            if var held = state.held.removeValue(forKey: board) {
                let before = held.weight
                for member in changes.members { held.ranking.apply(member) }
                held.exists = true
                held.version += 1
                state.answerBytes -= held.answerBytes
                held.answers = [:]
                held.answerBytes = 0
                state.members += held.weight - before
                if held.ranking.count > limits.maximumMembersPerBoard {
                    state.members -= held.weight
                    state.notBefore[board] = ContinuousClock.now + limits.reloadAfter
                } else {
                    state.held[board] = held
                }
            }
            return dropped
        }
        if !reload.isEmpty {
            Counter(label: "push_board_memory_resyncs_total").increment(by: reload.count)
            logger.warning("board memory: a gap in the updates log, reloading its boards", metadata: [
                "kafka.partition": "\(partition)", "push.boards": "\(reload.count)",
            ])
            for board in reload { want(board) }
        }
    }

    /// The update source stopped: nothing in memory is current any more.
    func stop() {
        state.withLock { state in
            state.dropAll()
            state.isActive = false
            state.wanted = []
        }
    }

    // MARK: - Loads

    /// Loads the boards asked for, one at a time, until cancelled: each from place 0 of the live board.
    func runLoads(from live: any LiveBoards) async {
        for await board in requests {
            let token = state.withLock { state -> Int? in
                state.wanted.remove(board)
                guard state.mayLoad(board), catalog.redisExpiry(of: board).map({ $0 > now() }) ?? true else { return nil }
                state.tokens += 1
                state.loading[board] = Loading(token: state.tokens)
                return state.tokens
            }
            guard let token else { continue }
            do {
                let slice = try await live.page(of: board, offset: 0, limit: limits.maximumMembersPerBoard)
                install(board, slice, token: token)
            } catch {
                state.withLock { state in
                    if state.loading[board]?.token == token { state.loading[board] = nil }
                    state.notBefore[board] = ContinuousClock.now + .seconds(1)
                }
                logger.debug("board memory: loading a board failed", metadata: ["scoreboard.board": "\(board.id)", "error": "\(error)"])
            }
            if Task.isCancelled { break }
        }
    }

    /// Installs a loaded board with the changes read since its load began, unless a gap voided the load.
    private func install(_ board: BoardKey, _ slice: BoardSlice?, token: Int) {
        let tooLarge = (slice?.members ?? 0) > limits.maximumMembersPerBoard
        let ranking = tooLarge ? nil : BoardRanking(ordered: (slice?.entries ?? []).map { ($0.userID, $0.score) })
        let installed = state.withLock { state -> Bool in
            guard let loading = state.loading.removeValue(forKey: board), loading.token == token, state.isActive else { return false }
            guard var ranking else {
                // Too large (it may have grown without an update, by a rebuild): not held, not tried again for a while.
                state.drop(board)
                state.notBefore[board] = ContinuousClock.now + limits.reloadAfter
                return false
            }
            for changes in loading.changes {
                for member in changes { ranking.apply(member) }
            }
            let previous = state.held[board]
            state.drop(board)
            state.reads += 1
            let held = Held(
                ranking: ranking, exists: slice != nil || !loading.changes.isEmpty, version: (previous?.version ?? 0) + 1, loadedAt: .now,
                expiry: catalog.redisExpiry(of: board), lastRead: previous?.lastRead ?? state.reads)
            state.held[board] = held
            state.members += held.weight
            state.loads += 1
            evict(&state, keeping: board)
            return true
        }
        guard installed else { return }
        Counter(label: "push_board_memory_loads_total").increment()
        Gauge(label: "push_board_memory_boards").record(statistics.boards)
        Gauge(label: "push_board_memory_members").record(statistics.members)
    }

    /// Evicts the boards read least recently until the bounds hold (never `keeping`, unless it alone is too much).
    private func evict(_ state: inout State, keeping board: BoardKey) {
        while state.held.count > limits.maximumBoards || state.members > limits.maximumMembers {
            guard let coldest = state.held.filter({ $0.key != board }).min(by: { $0.value.lastRead < $1.value.lastRead })?.key else {
                if state.members > limits.maximumMembers { state.drop(board) }
                return
            }
            state.drop(coldest)
        }
    }
}

/// The update source the feed runs, seen by the board memory first: it runs the memory's loads beside the source,
/// for as long as the source runs.
struct BoardMemoryFeeding: UpdateSource {
    let source: any UpdateSource
    let memory: BoardMemory
    let live: any LiveBoards

    func run(_ handle: @escaping @Sendable (UpdateSourceEvent) -> Void) async throws {
        let memory = self.memory
        defer { memory.stop() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { [live] in await memory.runLoads(from: live) }
            try await source.run { event in
                memory.observe(event)
                handle(event)
            }
            group.cancelAll()
        }
    }
}
