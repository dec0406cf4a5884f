import ScoreboardCore
import Synchronization

/// What a stream connection sends, in order.
public enum OutboundItem: Sendable, Equatable {
    case update(SequencedUpdate)
    /// A board's top N, labelled with the stream sequence it reflects at least.
    case snapshot(stream: String, sequence: Int64, page: BoardPage)

    public var order: (Int64, Int) {
        switch self {
        case .update(let update): (update.sequence, 1)
        case .snapshot(_, let sequence, _): (sequence, 0)
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

/// One client's pending items, bounded. While the client keeps up it gets every update in order; when more than
/// `coalesceThreshold` are pending, updates of the same board and member are coalesced into the latest (totals are
/// absolute, so only intermediate values go); past `limit` after that the client is dropped, so one slow reader never
/// holds memory or the feed hostage.
///
/// The feed appends under its own lock, once per subscriber and update, so appending is O(1) amortised: pending
/// items sit in arrival order with a dictionary from board and member to the newest pending update; coalescing
/// blanks the superseded entry in place, and the one pass over the queue when coalescing starts is paid for by the
/// appends that filled it. A drain takes everything, so each item is visited a bounded number of times.
public final class SubscriberBuffer: Sendable {
    /// A board and member: the unit of coalescing.
    struct UpdateKey: Hashable {
        var board: String
        var userID: String

        init(_ update: SequencedUpdate) {
            board = update.update.board
            userID = update.update.userID
        }
    }

    struct State {
        /// Pending items in arrival order; `nil` marks an update superseded by a newer one of the same key.
        var entries: [OutboundItem?] = []
        var pendingCount = 0
        /// Where in `entries` the newest pending update of each board and member is.
        var newestEntry: [UpdateKey: Int] = [:]
        var isCoalescing = false
        var waiter: CheckedContinuation<Void, Never>?
        var holds = 0
        var isOverflowed = false
        var isClosed = false
        var end: StreamEnd?
        var coalesced = 0
        /// Entries visited under the lock: appends, the coalescing pass, drains (what the complexity tests count).
        var entryVisits = 0

        mutating func reset() {
            entries.removeAll(keepingCapacity: true)
            newestEntry.removeAll(keepingCapacity: true)
            pendingCount = 0
            isCoalescing = false
        }
    }

    public let limit: Int
    public let coalesceThreshold: Int
    private let state = Mutex(State())

    public init(limit: Int, coalesceThreshold: Int? = nil) {
        self.limit = limit
        self.coalesceThreshold = coalesceThreshold ?? max(1, limit / 2)
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
            for item in items { Self.enqueue(item, into: &state, threshold: coalesceThreshold) }
            if state.pendingCount > limit {
                state.isOverflowed = true
                state.reset()
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

    private static func enqueue(_ item: OutboundItem, into state: inout State, threshold: Int) {
        state.entryVisits += 1
        guard case .update(let update) = item else {
            state.entries.append(item)
            state.pendingCount += 1
            return
        }
        let key = UpdateKey(update)
        if state.isCoalescing, let index = state.newestEntry[key], case .update(let pending)? = state.entries[index] {
            if pending.sequence > update.sequence {
                state.coalesced += 1  // an older update arriving late (a resume's missed updates): the pending one wins
                return
            }
            state.entries[index] = nil
            state.pendingCount -= 1
            state.coalesced += 1
        }
        state.newestEntry[key] = state.entries.count
        state.entries.append(item)
        state.pendingCount += 1
        if !state.isCoalescing && state.pendingCount > threshold {
            state.isCoalescing = true
            coalesceAll(&state)
        }
    }

    /// Keeps the newest update per board and member; snapshots stay. Runs once per drain cycle, when coalescing starts.
    private static func coalesceAll(_ state: inout State) {
        for index in state.entries.indices {
            state.entryVisits += 1
            guard case .update(let update)? = state.entries[index] else { continue }
            let key = UpdateKey(update)
            guard let newest = state.newestEntry[key], newest != index, case .update(let other)? = state.entries[newest] else { continue }
            if other.sequence >= update.sequence {
                state.entries[index] = nil
            } else {
                state.entries[newest] = nil
                state.newestEntry[key] = index
            }
            state.pendingCount -= 1
            state.coalesced += 1
        }
    }

    private static func takeWaiter(_ state: inout State) -> CheckedContinuation<Void, Never>? {
        let waiter = state.waiter
        state.waiter = nil
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
    /// after it). Returns `nil` when `idle` passed with nothing to send (time for a heartbeat). Cancelling the waiting
    /// task closes the buffer.
    public func next(idle: Duration) async -> Drain? {
        if let drained = takeNow() { return drained }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withTaskCancellationHandler {
                    await withCheckedContinuation { continuation in
                        let resumeNow = self.state.withLock { state -> Bool in
                            if state.isOverflowed || state.isClosed || (state.pendingCount > 0 && state.holds == 0) { return true }
                            state.waiter = continuation
                            return false
                        }
                        if resumeNow { continuation.resume() }
                    }
                } onCancel: {
                    self.state.withLock { Self.takeWaiter(&$0) }?.resume()
                }
            }
            group.addTask { try? await Task.sleep(for: idle) }
            await group.next()
            group.cancelAll()
        }
        if Task.isCancelled { close() }
        return takeNow()
    }

    /// Whatever can be sent now, without waiting (`nil`: nothing).
    public func takeNow() -> Drain? {
        let drained = state.withLock { state -> Drain? in
            if state.isOverflowed { return .overflowed }
            if state.pendingCount > 0 && state.holds == 0 {
                var items: [OutboundItem] = []
                items.reserveCapacity(state.pendingCount)
                for entry in state.entries {
                    if let entry { items.append(entry) }
                }
                state.entryVisits += state.entries.count
                state.reset()
                return .items(items)
            }
            if state.isClosed { return .closed(state.end) }
            return nil
        }
        // Sorting happens outside the lock; items mostly arrive in order, so usually there is nothing to do.
        if case .items(let items) = drained, !zip(items, items.dropFirst()).allSatisfy({ !($1.order < $0.order) }) {
            return .items(items.sorted { $0.order < $1.order })
        }
        return drained
    }

    /// Drops the client as if it had overflowed (what is pending is discarded; it reconnects with its last sequence):
    /// for a feed whose sequences stopped meaning what the client has.
    public func drop() {
        state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard !state.isClosed else { return nil }
            state.isOverflowed = true
            state.reset()
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

    /// Entries visited under the buffer's lock so far (appends, coalescing, drains): bounded by a constant times
    /// the items appended.
    var entryVisits: Int { state.withLock { $0.entryVisits } }

    /// A reader is parked in ``next(idle:)``.
    var hasWaitingReader: Bool { state.withLock { $0.waiter != nil } }
}
