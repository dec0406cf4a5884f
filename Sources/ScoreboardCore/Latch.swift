import Synchronization

/// A door that opens once and stays open: ``wait()`` returns when ``open()`` has been called (at once after that).
/// Any number of tasks may wait at the same time, unlike on an `AsyncStream`, which allows one iterator at a time.
/// A waiting task that is cancelled keeps waiting: the door is for start-up order, where opening is never far off.
public final class Latch: Sendable {
    private struct State {
        var isOpen = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    public init() {}

    public var isOpen: Bool { state.withLock { $0.isOpen } }

    public func open() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard !state.isOpen else { return [] }
            state.isOpen = true
            defer { state.waiters = [] }
            return state.waiters
        }
        // Resumed outside the lock: a resumed task may run at once on another thread.
        for waiter in waiters { waiter.resume() }
    }

    public func wait() async {
        await withCheckedContinuation { continuation in
            let resumeNow = state.withLock { state -> Bool in
                if state.isOpen { return true }
                state.waiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }
}
