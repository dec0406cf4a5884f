import Synchronization

/// Counts the batches between their decoding and the end of their outputs, so that the consume loop stays at most a
/// few batches ahead of the projector (memory stays bounded, and a dependency that is down stops consumption after a
/// few batches), and a revocation can wait until everything taken from the revoked partitions is done.
final class BatchesInFlight: Sendable {
    private struct Waiter {
        let id: UInt64
        let atMost: Int
        let continuation: CheckedContinuation<Void, Never>
    }

    private struct State {
        var count = 0
        var nextWaiterID: UInt64 = 0
        var waiters: [Waiter] = []
    }

    private let state = Mutex(State())

    var count: Int { state.withLock { $0.count } }

    func enter() {
        state.withLock { $0.count += 1 }
    }

    func leave() {
        let ready = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.count -= 1
            let count = state.count
            let ready = state.waiters.filter { count <= $0.atMost }
            state.waiters.removeAll { count <= $0.atMost }
            return ready.map(\.continuation)
        }
        // Resumed outside the lock: a resumed task may call straight back in.
        for continuation in ready { continuation.resume() }
    }

    /// Returns once at most `atMost` batches are in flight, or as soon as the task is cancelled.
    func wait(untilAtMost atMost: Int) async {
        let id = state.withLock { state in
            state.nextWaiterID += 1
            return state.nextWaiterID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state -> Bool in
                    if state.count <= atMost || Task.isCancelled { return true }
                    state.waiters.append(Waiter(id: id, atMost: atMost, continuation: continuation))
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { state -> Waiter? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index)
            }
            waiter?.continuation.resume()
        }
    }
}
