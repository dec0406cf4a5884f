import Foundation
import Logging
import ScoreboardKafka
import ServiceLifecycle
import Synchronization

/// Where the gateway hands accepted events: ``EventPublisher`` over Kafka, or a fake in tests.
public protocol ScoreEventPublishing: Sendable {
    /// Publishes `messages` and waits up to `deadline` for every acknowledgement. Returns `nil` when the deadline
    /// passed first; `settle` runs in any case, once all reports are in.
    func publish(
        _ messages: [KafkaProducerMessage], deadline: Duration,
        settle: @escaping @Sendable ([Result<KafkaDeliveryReport, KafkaError>]) async -> Void
    ) async -> [Result<KafkaDeliveryReport, KafkaError>]?
}

/// Publishes accepted events and answers within a deadline, without ever losing track of a message.
///
/// A request cannot wait for librdkafka's delivery timeout (tens of seconds) when the broker is down, but a message
/// already handed to librdkafka may still be delivered after the client was told 503. So each publish is a job that
/// runs to its end in this service's task group, whoever stops waiting: `settle` then records the real outcome (the
/// 202 answer under the idempotency key, or the key and token released for a retry). A client that retries in the
/// meantime finds its key pending and gets `idempotency-key-in-use`, never a second event.
public final class EventPublisher: ScoreEventPublishing, Service, Sendable {
    struct Job: Sendable {
        var messages: [KafkaProducerMessage]
        var outcome: Outcome<[Result<KafkaDeliveryReport, KafkaError>]>
        var settle: @Sendable ([Result<KafkaDeliveryReport, KafkaError>]) async -> Void
    }

    private let producer: KafkaProducer
    private let jobs: AsyncStream<Job>
    private let submit: AsyncStream<Job>.Continuation
    private let logger: Logger

    public init(producer: KafkaProducer, logger: Logger) {
        self.producer = producer
        self.logger = logger
        (jobs, submit) = AsyncStream.makeStream(of: Job.self)
    }

    /// Publishes `messages` and waits up to `deadline` for every acknowledgement. Returns `nil` when the deadline
    /// passed first; `settle` runs in any case, once all reports are in.
    public func publish(
        _ messages: [KafkaProducerMessage], deadline: Duration,
        settle: @escaping @Sendable ([Result<KafkaDeliveryReport, KafkaError>]) async -> Void
    ) async -> [Result<KafkaDeliveryReport, KafkaError>]? {
        let outcome = Outcome<[Result<KafkaDeliveryReport, KafkaError>]>()
        guard case .enqueued = submit.yield(Job(messages: messages, outcome: outcome, settle: settle)) else {
            let refused = messages.map { _ in Result<KafkaDeliveryReport, KafkaError>.failure(KafkaError.shuttingDown) }
            await settle(refused)
            return refused
        }
        return await outcome.wait(upTo: deadline)
    }

    public func run() async throws {
        await withDiscardingTaskGroup { group in
            // Stop taking jobs on graceful shutdown (the HTTP server, shut down before us, sends no more), but let the
            // group finish the jobs in flight.
            for await job in jobs.cancelOnGracefulShutdown() {
                group.addTask { [producer] in
                    let results: [Result<KafkaDeliveryReport, KafkaError>]
                    do {
                        results = try await producer.send(batch: job.messages)
                    } catch {
                        let failure = (error as? KafkaError) ?? KafkaError.shuttingDown
                        results = job.messages.map { _ in .failure(failure) }
                    }
                    await job.settle(results)
                    job.outcome.fulfil(results)
                }
            }
        }
        submit.finish()
        logger.info("event publisher drained")
    }
}

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
