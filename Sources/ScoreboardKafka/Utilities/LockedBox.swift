import Synchronization

/// A `Mutex` in a class, so that closures (C-callback bridges, poll threads) can share it by reference.
final class LockedBox<Value>: Sendable {
    private let mutex: Mutex<Value>

    init(_ value: sending Value) {
        mutex = Mutex(value)
    }

    func withLock<Result>(_ body: (inout sending Value) throws -> sending Result) rethrows -> sending Result {
        try mutex.withLock(body)
    }
}

/// An atomic flag in a class, for the same reason.
final class AtomicFlag: Sendable {
    private let atomic = Atomic<Bool>(false)

    var isSet: Bool { atomic.load(ordering: .acquiring) }

    /// Sets the flag; returns `true` only for the call that changed it.
    @discardableResult
    func set() -> Bool {
        atomic.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged
    }
}
