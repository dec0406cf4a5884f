import DequeModule
import Synchronization

/// A queue that many tasks take from: each item goes to exactly one taker, in order. `AsyncStream` allows one
/// iterator at a time, and a queue per connection would leave work waiting behind a slow connection while others
/// idle. The open-loop generator puts work here on schedule; connections take it when they are free, so the time an
/// item waits here counts in its latency.
final class WorkQueue<Item: Sendable>: Sendable {
    private struct State {
        var items = Deque<Item>()
        var takers = Deque<CheckedContinuation<Item?, Never>>()
        var isFinished = false
    }

    private let state = Mutex(State())

    var count: Int { state.withLock { $0.items.count } }

    func put(_ item: Item) {
        let taker = state.withLock { state -> CheckedContinuation<Item?, Never>? in
            if let taker = state.takers.popFirst() { return taker }
            state.items.append(item)
            return nil
        }
        taker?.resume(returning: item)
    }

    /// No more items: takers get what is left, then `nil`.
    func finish() {
        let takers = state.withLock { state -> Deque<CheckedContinuation<Item?, Never>> in
            state.isFinished = true
            defer { state.takers = [] }
            return state.takers
        }
        for taker in takers { taker.resume(returning: nil) }
    }

    /// The next item, or `nil` once finished and empty.
    func take() async -> Item? {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> Item?? in
                if let item = state.items.popFirst() { return .some(item) }
                if state.isFinished { return .some(nil) }
                state.takers.append(continuation)
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}
