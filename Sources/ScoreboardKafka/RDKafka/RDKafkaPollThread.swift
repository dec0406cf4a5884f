import Foundation
import Synchronization

/// A dedicated OS thread that runs one librdkafka poll step over and over until stopped.
///
/// librdkafka's polls block for up to their timeout; on their own thread they never hold up an event loop or the
/// cooperative pool, and callbacks (delivery reports) run here, not inside librdkafka's internal threads.
final class RDKafkaPollThread: Sendable {
    private let isStopped = AtomicFlag()
    private let finished = DispatchSemaphore(value: 0)

    /// - Parameter step: One poll; returns `false` when the loop should end (an instance being retired that has
    ///   nothing left to report).
    init(name: String, step: @escaping @Sendable () -> Bool) {
        let thread = Thread { [isStopped, finished] in
            while !isStopped.isSet && step() {}
            isStopped.set()
            finished.signal()
        }
        thread.name = name
        thread.start()
    }

    /// Stops the loop after its current step and waits for it (at most one poll timeout). Safe to call twice.
    func stop() {
        if isStopped.set() { finished.wait() }
    }

    /// Asks the loop to stop after its current step, without waiting for it (for `deinit`s, which must not block).
    func requestStop() {
        isStopped.set()
    }
}
