import ScoreboardCore
import Synchronization

/// What a stream connection sends, in order. One pointer wide (the update is a shared instance, the rare snapshot
/// boxed), so that queueing an item for each of many subscribers copies little.
public enum OutboundItem: Sendable, Equatable {
    case update(SequencedUpdate)
    /// A board's top N, labelled with the stream sequence it reflects at least.
    indirect case snapshot(stream: String, sequence: Int64, page: BoardPage)
    /// An achievement the user unlocked (personal channel only): no board sequence.
    case achievement(AchievementFrame)

    /// The order of a drain: a board's snapshot before its updates from that sequence on; an achievement, which has no
    /// sequence, after the board items drained with it.
    public var order: (Int64, Int) {
        switch self {
        case .update(let update): (update.sequence, 1)
        case .snapshot(_, let sequence, _): (sequence, 0)
        case .achievement: (Int64.max, 2)
        }
    }
}

/// Why the server ends a stream on its own; the client gets it as a last event (SSE) or close reason (WebSocket).
public enum StreamEnd: String, Sendable, Equatable {
    /// The server is shutting down: reconnect (to another instance) with the last sequence.
    case shuttingDown = "shutting-down"
    /// The personal stream's token expired: reconnect with a fresh token.
    case tokenExpired = "token-expired"
    /// The personal stream's token was revoked.
    case tokenRevoked = "token-revoked"
}

/// One client's pending items, bounded. While the client keeps up it gets every update in order; a drain that finds
/// more than `coalesceThreshold` items pending merges the updates of each board into one at the newest sequence
/// (totals are absolute, so only intermediate values go); past `limit` pending the client is dropped, so one slow
/// reader never holds memory or the feed hostage.
///
/// The feed appends under its own lock, once per subscriber and update, so appending is O(1): it only adds the item
/// (a pointer to the update instance every subscriber shares). The work of coalescing is the reader's,
/// in its own task after it took the pending items, so a slow client never costs the feed O(its queue).
public final class SubscriberBuffer: Sendable {
    struct State {
        /// Pending items in arrival order.
        var entries: [OutboundItem] = []
        var waiter: CheckedContinuation<Void, Never>?
        /// When the parked reader wants to be woken with nothing to send (a heartbeat or a token check is due).
        var idleDeadline: ContinuousClock.Instant?
        var holds = 0
        var isOverflowed = false
        var isClosed = false
        var end: StreamEnd?
        var coalesced = 0
        /// Steps taken under the lock: one per item appended and one per drain (what the complexity tests count).
        var entryVisits = 0
    }

    public let limit: Int
    public let coalesceThreshold: Int
    private let state = Mutex(State())

    /// - Parameters:
    ///   - limit: pending items past which the client is dropped.
    ///   - coalesceThreshold: pending items past which a drain merges each board's updates (default: 64, or half
    ///     the limit when that is less).
    public init(limit: Int, coalesceThreshold: Int? = nil) {
        self.limit = limit
        self.coalesceThreshold = coalesceThreshold ?? max(1, min(64, limit / 2))
    }

    public func append(_ update: SequencedUpdate) { append([.update(update)]) }

    public func append(_ items: [OutboundItem]) {
        enqueue(items)?.resume()
    }

    /// Queues `items` and returns the reader to wake, if any: the caller resumes it after releasing any lock of its
    /// own (the feed appends under its lock and wakes readers after it).
    func enqueue(_ items: [OutboundItem]) -> Wake? {
        guard !items.isEmpty else { return nil }
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard !state.isClosed, !state.isOverflowed else { return nil }
            state.entryVisits += items.count
            state.entries.append(contentsOf: items)
            if state.entries.count > limit {
                state.isOverflowed = true
                state.entries = []
            }
            return state.holds == 0 || state.isOverflowed ? Self.takeWaiter(&state) : nil
        }
        return waiter.map(Wake.init)
    }

    /// A parked reader to resume.
    struct Wake: Sendable {
        let continuation: CheckedContinuation<Void, Never>
        func resume() { continuation.resume() }
    }

    /// Merges the updates of each board into one, at the newest sequence, with each member's newest entry (in order
    /// of their last change): what a client applying them one by one would end with. Snapshots stay, and updates are
    /// only merged between them, so no update moves across a snapshot. `items` are in order (``OutboundItem/order``).
    /// - Returns: the merged items, in order, and how many updates were merged away.
    static func coalesce(_ items: [OutboundItem]) -> (items: [OutboundItem], mergedAway: Int) {
        /// One board's updates merged so far: the first, the newest sequence, and every member entry in order.
        struct Merged {
            let first: SequencedUpdate
            var sequence: Int64
            var members: [BoardChanges.Member]
            var count = 1
        }
        var result: [OutboundItem] = []
        var boards: [String: Merged] = [:]
        var mergedAway = 0
        func flush() {
            for merged in boards.values {
                // Alone: the very update, whose frame is shared with the other subscribers.
                guard merged.count > 1 else {
                    result.append(.update(merged.first))
                    continue
                }
                var changes = merged.first.changes
                changes.members = newestPerMember(merged.members)
                result.append(.update(SequencedUpdate(sequence: merged.sequence, changes: changes)))
            }
            boards = [:]
        }
        for item in items {
            guard case .update(let update) = item else {
                flush()
                result.append(item)
                continue
            }
            let board = update.changes.board
            guard boards[board] != nil else {
                boards[board] = Merged(first: update, sequence: update.sequence, members: update.changes.members)
                continue
            }
            // Mutated in place in the dictionary, so the members array is not shared and appending does not copy it.
            boards[board]!.sequence = max(boards[board]!.sequence, update.sequence)
            boards[board]!.members.append(contentsOf: update.changes.members)
            boards[board]!.count += 1
            mergedAway += 1
        }
        flush()
        // Stable: a snapshot keeps its place before the updates of its sequence.
        return (result.sorted { $0.order < $1.order }, mergedAway)
    }

    /// The last entry of each member, in the order of those last entries.
    static func newestPerMember(_ members: [BoardChanges.Member]) -> [BoardChanges.Member] {
        var seen = Set<String>()
        var newest: [BoardChanges.Member] = []
        for member in members.reversed() where seen.insert(member.userID).inserted { newest.append(member) }
        return newest.reversed()
    }

    private static func takeWaiter(_ state: inout State) -> CheckedContinuation<Void, Never>? {
        let waiter = state.waiter
        state.waiter = nil
        state.idleDeadline = nil
        return waiter
    }

    /// Holds delivery while a snapshot is being read, so that no update overtakes it.
    public func hold() { state.withLock { $0.holds += 1 } }

    public func release() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.holds -= 1
            return state.holds == 0 ? Self.takeWaiter(&state) : nil
        }
        waiter?.resume()
    }

    public enum Drain: Sendable, Equatable {
        case items([OutboundItem])
        /// The client fell too far behind and must reconnect (and resume or take a snapshot).
        case overflowed
        /// Nothing more will come; with the server's reason when it ended the stream on its own.
        case closed(StreamEnd?)
    }

    /// Waits until something can be sent, then takes all of it, ordered by sequence (a snapshot before the updates
    /// after it). Returns `nil` when woken by ``wakeIfIdle(at:)`` past `idleDeadline` with nothing to send (time for
    /// a heartbeat). Waiting costs no task and no timer of its own: the stream's timer (``StreamTimer``) does the
    /// waking. Cancelling the waiting task closes the buffer.
    public func next(idleDeadline: ContinuousClock.Instant) async -> Drain? {
        if let drained = takeNow() { return drained }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let resumeNow = state.withLock { state -> Bool in
                    // Cancellation is checked under the lock: a cancellation handler that ran before the waiter was
                    // stored found nothing to resume, so the waiter must not be stored.
                    if state.isOverflowed || state.isClosed || (!state.entries.isEmpty && state.holds == 0) || Task.isCancelled { return true }
                    state.waiter = continuation
                    state.idleDeadline = idleDeadline
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            state.withLock { Self.takeWaiter(&$0) }?.resume()
        }
        if Task.isCancelled { close() }
        return takeNow()
    }

    /// Wakes the parked reader, with nothing to send, when its idle deadline is at or before `now`.
    func wakeIfIdle(at now: ContinuousClock.Instant) {
        state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let deadline = state.idleDeadline, deadline <= now else { return nil }
            return Self.takeWaiter(&state)
        }?.resume()
    }

    /// Whatever can be sent now, without waiting (`nil`: nothing).
    public func takeNow() -> Drain? {
        let drained = state.withLock { state -> Drain? in
            if state.isOverflowed { return .overflowed }
            if !state.entries.isEmpty && state.holds == 0 {
                state.entryVisits += 1
                defer { state.entries = [] }  // hands the storage over: an idle client holds none
                return .items(state.entries)
            }
            if state.isClosed { return .closed(state.end) }
            return nil
        }
        guard case .items(var items) = drained else { return drained }
        // Sorting and coalescing happen outside the lock; items mostly arrive in order, so usually there is no sorting.
        if !zip(items, items.dropFirst()).allSatisfy({ !($1.order < $0.order) }) {
            items.sort { $0.order < $1.order }
        }
        if items.count > coalesceThreshold {
            let (merged, mergedAway) = Self.coalesce(items)
            if mergedAway > 0 { state.withLock { $0.coalesced += mergedAway } }
            items = merged
        }
        return .items(items)
    }

    /// Drops the client as if it had overflowed (what is pending is discarded; it reconnects with its last sequence):
    /// for a feed whose sequences stopped meaning what the client has.
    public func drop() {
        state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard !state.isClosed else { return nil }
            state.isOverflowed = true
            state.entries = []
            return Self.takeWaiter(&state)
        }?.resume()
    }

    /// Wakes the reader with `.closed` once nothing is pending.
    public func close() { close(nil) }

    /// Ends the stream for `reason`: the reader gets what is pending, then `.closed(reason)`. The first reason stays.
    public func close(_ reason: StreamEnd?) {
        state.withLock { state -> CheckedContinuation<Void, Never>? in
            if !state.isClosed { state.end = reason }
            state.isClosed = true
            return Self.takeWaiter(&state)
        }?.resume()
    }

    public var coalescedCount: Int { state.withLock { $0.coalesced } }

    /// Steps taken under the buffer's lock so far (appends, drains): bounded by a constant times the items appended.
    var entryVisits: Int { state.withLock { $0.entryVisits } }

    /// A reader is parked in ``next(idle:)``.
    var hasWaitingReader: Bool { state.withLock { $0.waiter != nil } }
}
