import CRdKafka
import Dispatch
import Logging
import ServiceLifecycle
import Synchronization

/// An idempotent, `acks=all` producer over librdkafka.
///
/// `send` returns only once the broker acknowledged the message (its delivery report arrived), with the partition
/// and offset it was written at. A dedicated thread polls librdkafka for delivery reports and resumes the waiting
/// tasks, so no event loop and no cooperative thread ever blocks on the broker.
///
/// It heals itself: an idempotent producer whose broker forgot it (a memory-only broker restarted; the broker answers
/// `UNKNOWN_PRODUCER_ID`) is in a fatal state for good, so the instance is retired (what it holds fails, its senders
/// get the error) and a new one takes the next messages.
///
/// - Important: Run it as a `Service` (or call ``shutdown()``) so that outstanding messages are flushed on exit.
public final class KafkaProducer: Service, Sendable {
    private let configuration: KafkaProducerConfiguration
    private let logger: Logger
    private let state: LockedBox<State>

    private struct State {
        /// The librdkafka instance that takes new messages.
        var instance: ProducerInstance?
        var isShutDown = false
        /// Counts the poll steps that served delivery reports (each frees room in librdkafka's queue). A sender that
        /// saw QUEUE_FULL waits only if this has not moved since it looked: a report served between its failed
        /// produce and its wait would otherwise be a lost wake-up, and with nothing else in flight it would wait
        /// forever.
        var roomGeneration: UInt64 = 0
        /// Tasks waiting for room in librdkafka's queue (it answered QUEUE_FULL).
        var roomWaiters: [CheckedContinuation<Void, Never>] = []
    }

    /// - Throws: ``KafkaError`` when the configuration is rejected or the runtime is too old.
    public init(configuration: KafkaProducerConfiguration, logger: Logger) throws {
        var logger = logger
        logger[metadataKey: "kafka.client.type"] = "producer"
        self.configuration = configuration
        self.logger = logger
        self.state = LockedBox(State())
        let instance = try makeInstance()
        state.withLock { $0.instance = instance }
    }

    deinit {
        // Not `stop()`: that waits for the current poll (up to 100 ms) on whatever thread drops the last reference.
        // The poll thread holds the client, so the handle stays valid until its loop has ended.
        state.withLock { $0.instance }?.pollThread.requestStop()
    }

    /// A new librdkafka instance with its poll thread. Its fatal errors retire it (``replace(_:)``).
    private func makeInstance() throws -> ProducerInstance {
        let retiring = AtomicFlag()
        let replacement = LockedBox<(@Sendable () -> Void)?>(nil)
        let callbacks = RDKafkaCallbacks(logger: logger, onFatal: { replacement.withLock { $0 }?() })
        let client = try RDKafkaClient(kind: .producer, properties: configuration.properties, callbacks: callbacks, label: "producer")
        let state = self.state
        let pollThread = RDKafkaPollThread(name: "scoreboard.kafka.producer.poll") {
            // Serves delivery reports (each resumes its sender); returns early when one arrives.
            let served = rd_kafka_poll(client.handle, 100)
            if served > 0 {
                let waiters = state.withLock { state in
                    state.roomGeneration &+= 1
                    defer { state.roomWaiters.removeAll() }
                    return state.roomWaiters
                }
                // Resumed outside the lock.
                for waiter in waiters { waiter.resume() }
            }
            // A retired instance polls until every message it held has had its report, then its thread ends.
            return !(retiring.isSet && rd_kafka_outq_len(client.handle) == 0)
        }
        let instance = ProducerInstance(client: client, pollThread: pollThread, isRetiring: retiring)
        // Called on the poll thread, inside rd_kafka_poll: the replacement is made elsewhere.
        replacement.withLock { $0 = { [weak self, weak instance] in
            guard let self, let instance else { return }
            DispatchQueue.global().async { self.replace(instance, reason: "fatal error") }
        } }
        return instance
    }

    /// Retires an instance that cannot deliver any more (a fatal error, or wedged) and puts a new one in its place
    /// (once per instance).
    private func replace(_ failed: ProducerInstance, reason: String) {
        guard failed.isRetiring.set() else { return }
        var code = [CChar](repeating: 0, count: 512)
        let fatal = rd_kafka_fatal_error(failed.client.handle, &code, code.count)
        logger.error("Kafka producer cannot deliver: replacing its instance; the messages it held fail", metadata: [
            "reason": "\(reason)", "kafka.error.name": "\(String(cString: rd_kafka_err2name(fatal)))",
            "kafka.error": "\(RDKafkaClient.string(from: code))",
        ])
        // Fail what it holds now, so its senders hear at once rather than at their delivery timeout.
        _ = rd_kafka_purge(failed.client.handle, Int32(RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT))
        let fresh: ProducerInstance
        do {
            fresh = try makeInstance()
        } catch {
            logger.error("Kafka producer could not be replaced", metadata: ["error": "\(error)"])
            return
        }
        let installed = state.withLock { state -> Bool in
            guard !state.isShutDown, state.instance === failed else { return false }
            state.instance = fresh
            return true
        }
        if !installed { fresh.pollThread.requestStop() }
    }

    /// The instance taking new messages (tests watch it change after a fatal error).
    var instance: ProducerInstance? { state.withLock { $0.instance } }

    // MARK: - Sending

    /// Sends one message and waits for the broker's acknowledgement.
    /// - Returns: The partition and offset the message was written at.
    /// - Throws: A ``KafkaError`` from the delivery report (for example `_MSG_TIMED_OUT` when no broker took it
    ///   within ``KafkaProducerConfiguration/deliveryTimeout``) or from librdkafka refusing the message.
    public func send(_ message: KafkaProducerMessage) async throws -> KafkaDeliveryReport {
        try await send(batch: [message])[0].get()
    }

    /// Sends several messages and waits until every one has its delivery report: one suspension for the whole batch,
    /// which is what lets Swift keep up with librdkafka.
    /// - Returns: One result per message, in the order given.
    /// - Note: Cancelling the calling task does not unsend anything: the call still returns when every report is in,
    ///   which ``KafkaProducerConfiguration/deliveryTimeout`` bounds.
    public func send(batch messages: [KafkaProducerMessage]) async throws -> [Result<KafkaDeliveryReport, KafkaError>] {
        guard !messages.isEmpty else { return [] }
        if state.withLock({ $0.isShutDown }) {
            throw KafkaError(code: .shutdown, reason: "the producer has been shut down")
        }
        let tracker = DeliveryTracker(topics: messages.map(\.topic))
        let sentOn = state.withLock { $0.instance }
        for (index, message) in messages.enumerated() {
            while true {
                let (generation, isShutDown, instance) = state.withLock { ($0.roomGeneration, $0.isShutDown, $0.instance) }
                // After shutdown nothing polls for delivery reports: a message produced then would never settle.
                let error = isShutDown || instance == nil
                    ? RD_KAFKA_RESP_ERR__QUEUE_FULL : produce(message, on: instance!.client, opaque: tracker.opaque(for: index))
                if error == RD_KAFKA_RESP_ERR_NO_ERROR { break }
                if error == RD_KAFKA_RESP_ERR__QUEUE_FULL, await waitForRoom(after: generation) {
                    continue
                }
                let failure: KafkaError = error == RD_KAFKA_RESP_ERR__QUEUE_FULL
                    ? KafkaError(code: .shutdown, reason: "the producer shut down while waiting for room in its queue")
                    : .rdKafka(error, code: .produce, context: message.topic)
                tracker.complete(index: index, with: .failure(failure))
                break
            }
        }
        let results = await tracker.results()
        if let sentOn { checkHealth(of: sentOn, after: results) }
        return results
    }

    /// Replaces the instance a send went out on when its results say it cannot deliver any more
    /// (``replacementReason(after:quietFor:deliveryTimeout:)``).
    private func checkHealth(of instance: ProducerInstance, after results: [Result<KafkaDeliveryReport, KafkaError>]) {
        let now = DispatchTime.now().uptimeNanoseconds
        if results.contains(where: { (try? $0.get()) != nil }) { instance.lastDelivery.store(now, ordering: .relaxed) }
        let last = instance.lastDelivery.load(ordering: .relaxed)
        // Another send may have stored a later instant meanwhile: then it is not quiet at all.
        let quietFor = Duration.nanoseconds(Int64(clamping: now > last ? now - last : 0))
        if let reason = Self.replacementReason(after: results, quietFor: quietFor, deliveryTimeout: configuration.deliveryTimeout) {
            DispatchQueue.global().async { self.replace(instance, reason: reason) }
        }
    }

    /// Delivery errors that say the broker no longer takes this instance's producer id. A memory-only broker that
    /// restarted hands out producer ids from 1 again, so an instance that outlived it can share its id with a new
    /// producer: the two fence each other (`PRODUCER_FENCED` once either bumps the epoch) or break each other's
    /// sequence numbers. librdkafka raises only some of these as fatal; the others fail every later message alike.
    static let lostProducerIdentity: Set<String> = [
        "PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH", "UNKNOWN_PRODUCER_ID", "OUT_OF_ORDER_SEQUENCE_NUMBER", "INVALID_PRODUCER_ID_MAPPING",
    ]

    /// Why an instance must be replaced after a send with these results, `nil` when it may go on.
    ///
    /// - A result that says the broker no longer takes its producer id (``lostProducerIdentity``): a new instance asks
    ///   the broker for a new one. Before, a worker whose producer was fenced this way failed every batch for good.
    /// - Messages that only time out, with no delivery for a whole delivery timeout: the instance is wedged. A broker
    ///   that restarted without its state answers UNKNOWN_PRODUCER_ID forever while librdkafka bumps the epoch of a
    ///   producer id the broker never knew (measured against the local broker: no delivery for the minute it was
    ///   watched). Replacing one after a plain outage costs nothing but a reconnect.
    static func replacementReason(
        after results: [Result<KafkaDeliveryReport, KafkaError>], quietFor: Duration, deliveryTimeout: Duration
    ) -> String? {
        let failures = results.compactMap { result -> String? in
            if case .failure(let error) = result { return error.rdKafkaName ?? "" }
            return nil
        }
        if let lost = failures.first(where: lostProducerIdentity.contains) {
            return "the broker no longer accepts its producer id (\(lost))"
        }
        if failures.count == results.count, failures.contains("_MSG_TIMED_OUT"), quietFor > deliveryTimeout {
            return "no delivery for a whole delivery timeout"
        }
        return nil
    }

    private func produce(_ message: KafkaProducerMessage, on client: RDKafkaClient, opaque: UnsafeMutableRawPointer) -> rd_kafka_resp_err_t {
        let partition = message.partition ?? RD_KAFKA_PARTITION_UA
        let timestamp = message.timestampMilliseconds ?? 0
        return message.value.withUnsafeBytes { value in
            if let key = message.key {
                return key.withUnsafeBytes { key in
                    scoreboard_rd_kafka_produce(
                        client.handle, message.topic, partition, value.baseAddress, value.count, key.baseAddress,
                        key.count, timestamp, opaque)
                }
            }
            return scoreboard_rd_kafka_produce(
                client.handle, message.topic, partition, value.baseAddress, value.count, nil, 0, timestamp, opaque)
        }
    }

    /// Waits until a poll step serves delivery reports after `generation`, which frees room in the queue.
    /// - Returns: `false` when the producer shut down instead (no room will come).
    private func waitForRoom(after generation: UInt64) async -> Bool {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let waits = state.withLock { state in
                guard !state.isShutDown, state.roomGeneration == generation else { return false }
                state.roomWaiters.append(continuation)
                return true
            }
            if !waits { continuation.resume() }
        }
        return !state.withLock { $0.isShutDown }
    }

    /// The number of messages librdkafka still holds (queued, in flight, or awaiting their report).
    public var outstandingMessageCount: Int {
        guard let client = state.withLock({ $0.instance?.client }) else { return 0 }
        return Int(rd_kafka_outq_len(client.handle))
    }

    // MARK: - Lifecycle

    /// Waits for graceful shutdown, then flushes (see ``shutdown()``).
    public func run() async throws {
        logger.info("Kafka producer running", metadata: ["kafka.runtime": "\(KafkaRuntime.version)"])
        try? await gracefulShutdown()
        await shutdown()
    }

    /// Flushes outstanding messages for at most ``KafkaProducerConfiguration/shutdownFlushTimeout``, fails whatever
    /// is left (their senders get an error), then stops polling. Further sends throw. Safe to call twice.
    public func shutdown() async {
        let (alreadyShutDown, roomWaiters) = state.withLock { state in
            defer {
                state.isShutDown = true
                state.roomWaiters.removeAll()
            }
            return (state.isShutDown, state.roomWaiters)
        }
        // Senders waiting for room would wait for a poll that is about to stop: they fail now instead.
        for waiter in roomWaiters { waiter.resume() }
        guard !alreadyShutDown else { return }
        let timeout = Int32(configuration.shutdownFlushTimeout.milliseconds)
        guard let instance = state.withLock({ $0.instance }) else { return }
        let client = instance.client
        let remaining: Int32 = (try? await client.onBlockingQueue {
            _ = rd_kafka_flush(client.handle, timeout)
            let left = rd_kafka_outq_len(client.handle)
            if left > 0 {
                // Fail what is left so that no sender waits forever; the poll thread delivers these reports.
                _ = rd_kafka_purge(client.handle, Int32(RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT))
                _ = rd_kafka_flush(client.handle, 1000)
            }
            return left
        }) ?? 0
        let pollThread = instance.pollThread
        _ = try? await client.onBlockingQueue { pollThread.stop() }
        logger.info("Kafka producer stopped", metadata: ["kafka.unflushed": "\(remaining)"])
    }
}

/// One librdkafka producer instance and the thread that polls it.
final class ProducerInstance: Sendable {
    let client: RDKafkaClient
    let pollThread: RDKafkaPollThread
    /// Set once the instance hit a fatal error: it takes no new messages, and its thread ends once it has nothing left.
    let isRetiring: AtomicFlag
    /// When it last delivered a message (or was made), in `DispatchTime` nanoseconds.
    let lastDelivery = Atomic<UInt64>(DispatchTime.now().uptimeNanoseconds)

    init(client: RDKafkaClient, pollThread: RDKafkaPollThread, isRetiring: AtomicFlag) {
        self.client = client
        self.pollThread = pollThread
        self.isRetiring = isRetiring
    }
}

// MARK: - Delivery reports

/// Collects the reports of one `send(batch:)` call and resumes its caller when the last one is in.
///
/// Each message's opaque pointer is the address of its slot in one buffer the tracker allocates for the batch: no
/// allocation per message. The caller keeps the tracker alive until every report is in (it awaits ``results()``),
/// so the pointers stay valid for as long as librdkafka may hand them back.
final class DeliveryTracker: @unchecked Sendable {
    typealias Outcome = Result<KafkaDeliveryReport, KafkaError>

    private struct State {
        var results: [Outcome?]
        var remaining: Int
        var waiter: CheckedContinuation<[Outcome], Never>?
    }

    struct Slot {
        var tracker: UnsafeMutableRawPointer
        var index: Int
    }

    private let state: LockedBox<State>
    /// Topic of each message, so that reports need not build a string from C per message.
    let topics: [String]
    // Written once in init, then only read (by the poll thread): hence `@unchecked Sendable`.
    private let slots: UnsafeMutablePointer<Slot>

    init(topics: [String]) {
        self.topics = topics
        state = LockedBox(State(results: Array(repeating: nil, count: topics.count), remaining: topics.count))
        slots = .allocate(capacity: topics.count)
        let me = Unmanaged.passUnretained(self).toOpaque()
        for index in 0..<topics.count { (slots + index).initialize(to: Slot(tracker: me, index: index)) }
    }

    deinit {
        slots.deinitialize(count: topics.count)
        slots.deallocate()
    }

    func opaque(for index: Int) -> UnsafeMutableRawPointer { UnsafeMutableRawPointer(slots + index) }

    func complete(index: Int, with result: Outcome) {
        let resume: (CheckedContinuation<[Outcome], Never>, [Outcome])? = state.withLock { state in
            state.results[index] = result
            state.remaining -= 1
            guard state.remaining == 0, let waiter = state.waiter else { return nil }
            state.waiter = nil
            return (waiter, state.results.map { $0! })
        }
        // Resume outside the lock.
        if let (waiter, results) = resume { waiter.resume(returning: results) }
    }

    func results() async -> [Outcome] {
        await withCheckedContinuation { continuation in
            let ready: [Outcome]? = state.withLock { state in
                if state.remaining == 0 { return state.results.map { $0! } }
                state.waiter = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}

/// librdkafka calls this on the poll thread, once per message.
let rdKafkaDeliveryCallback: @convention(c) (OpaquePointer?, UnsafePointer<rd_kafka_message_t>?, UnsafeMutableRawPointer?) -> Void = {
    _, message, _ in
    guard let message, let opaque = message.pointee._private else { return }
    let slot = opaque.assumingMemoryBound(to: DeliveryTracker.Slot.self).pointee
    // A strong reference for the length of this call: the tracker's last report may release its owner's.
    let tracker = Unmanaged<DeliveryTracker>.fromOpaque(slot.tracker).takeUnretainedValue()
    let topic = tracker.topics[slot.index]
    let result: DeliveryTracker.Outcome
    if message.pointee.err == RD_KAFKA_RESP_ERR_NO_ERROR {
        result = .success(KafkaDeliveryReport(topic: topic, partition: message.pointee.partition, offset: message.pointee.offset))
    } else {
        result = .failure(.rdKafka(message.pointee.err, code: .messageDelivery, context: topic))
    }
    tracker.complete(index: slot.index, with: result)
}
