import Logging
import ScoreboardCore
import ServiceLifecycle
import Synchronization

/// Publishes accepted events and answers within a deadline, without ever losing track of an event.
///
/// A request cannot wait for the broker's delivery timeout (seconds) when the broker is down, but an event already
/// handed to the producer may still be delivered after the client was told 503. So each publish is a job that runs to
/// its end in this service's task group, whoever stops waiting: `settle` then records the real outcome (the 202 answer
/// under the idempotency key, or the key and token released for a retry). A client that retries in the meantime finds
/// its key pending and gets `idempotency-key-in-use`, never a second event.
final class EventPublisher: Service, Sendable {
    typealias Reports = [Result<EventPosition, any Error>]

    struct Job: Sendable {
        var events: [ScoreEvent]
        var outcome: Outcome<Reports>
        var settle: @Sendable (Reports) async -> Void
    }

    private let port: any ScoreEventPublishing
    private let jobs: AsyncStream<Job>
    private let submit: AsyncStream<Job>.Continuation
    private let logger: Logger

    init(port: any ScoreEventPublishing, logger: Logger) {
        self.port = port
        self.logger = logger
        (jobs, submit) = AsyncStream.makeStream(of: Job.self)
    }

    /// Publishes `events` and waits up to `deadline` for every acknowledgement. Returns `nil` when the deadline
    /// passed first; `settle` runs in any case, once all reports are in.
    func publish(_ events: [ScoreEvent], deadline: Duration, settle: @escaping @Sendable (Reports) async -> Void) async -> Reports? {
        let outcome = Outcome<Reports>()
        guard case .enqueued = submit.yield(Job(events: events, outcome: outcome, settle: settle)) else {
            let refused: Reports = events.map { _ in .failure(PublisherStopped()) }
            await settle(refused)
            return refused
        }
        return await outcome.wait(upTo: deadline)
    }

    func run() async throws {
        await withDiscardingTaskGroup { group in
            // Stop taking jobs on graceful shutdown (the HTTP server, shut down before us, sends no more), but let the
            // group finish the jobs in flight.
            for await job in jobs.cancelOnGracefulShutdown() {
                group.addTask { [port] in
                    let results = await port.publish(job.events)
                    await job.settle(results)
                    job.outcome.fulfil(results)
                }
            }
        }
        submit.finish()
        logger.info("event publisher drained")
    }
}

/// The publisher no longer takes events: the gateway is shutting down.
struct PublisherStopped: Error {}

/// A value that arrives once, awaited with a deadline by any number of waiters.
final class Outcome<Value: Sendable>: Sendable {
    private enum State {
        case waiting([UInt64: CheckedContinuation<Value?, Never>])
        case done(Value)
    }

    private let state = Mutex<State>(.waiting([:]))
    private let nextID = Atomic<UInt64>(0)

    func fulfil(_ value: Value) {
        let waiters = state.withLock { state -> [CheckedContinuation<Value?, Never>] in
            guard case .waiting(let waiters) = state else { return [] }
            state = .done(value)
            return Array(waiters.values)
        }
        for waiter in waiters { waiter.resume(returning: value) }
    }

    /// The value, or `nil` when `deadline` passes first (or the waiting task is cancelled).
    func wait(upTo deadline: Duration) async -> Value? {
        let id = nextID.add(1, ordering: .relaxed).newValue
        return await withTaskGroup(of: Value?.self) { group in
            group.addTask {
                await withTaskCancellationHandler {
                    await withCheckedContinuation { continuation in
                        let immediate: Value?? = self.state.withLock { state in
                            switch state {
                            case .done(let value): return .some(value)
                            case .waiting(var waiters):
                                waiters[id] = continuation
                                state = .waiting(waiters)
                                return .none
                            }
                        }
                        if let immediate { continuation.resume(returning: immediate) }
                    }
                } onCancel: {
                    let waiter = self.state.withLock { state -> CheckedContinuation<Value?, Never>? in
                        guard case .waiting(var waiters) = state else { return nil }
                        let waiter = waiters.removeValue(forKey: id)
                        state = .waiting(waiters)
                        return waiter
                    }
                    waiter?.resume(returning: nil)
                }
            }
            group.addTask {
                try? await Task.sleep(for: deadline)
                return nil
            }
            let first = await group.next()!
            group.cancelAll()
            return first
        }
    }
}
