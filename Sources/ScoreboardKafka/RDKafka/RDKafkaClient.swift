import CRdKafka
import Dispatch
import Logging
import Synchronization

/// Owns one `rd_kafka_t` handle. Holds only `let`s; librdkafka handles are thread-safe, so sharing is sound.
final class RDKafkaClient: @unchecked Sendable {
    enum Kind {
        case producer, consumer
    }

    let handle: OpaquePointer
    let callbacks: RDKafkaCallbacks
    /// Where librdkafka's blocking calls (flush, commit, close, admin results) wait: never the cooperative pool.
    let blockingQueue: DispatchQueue

    /// - Throws: ``KafkaError`` when a property is rejected or the handle cannot be created.
    init(kind: Kind, properties: [String: String], callbacks: RDKafkaCallbacks, label: String) throws {
        try KafkaRuntime.requireSupported()
        guard let conf = rd_kafka_conf_new() else {
            throw KafkaError(code: .configuration, reason: "rd_kafka_conf_new returned nothing")
        }
        var errorBuffer = [CChar](repeating: 0, count: 512)
        for (key, value) in properties.sorted(by: { $0.key < $1.key }) {
            let result = rd_kafka_conf_set(conf, key, value, &errorBuffer, errorBuffer.count)
            if result != RD_KAFKA_CONF_OK {
                rd_kafka_conf_destroy(conf)
                throw KafkaError(code: .configuration, reason: "\(key): \(Self.string(from: errorBuffer))")
            }
        }
        // The callbacks object outlives the handle (it is a stored property destroyed after `deinit` runs).
        rd_kafka_conf_set_opaque(conf, Unmanaged.passUnretained(callbacks).toOpaque())
        rd_kafka_conf_set_log_cb(conf, rdKafkaLogCallback)
        // Without an error callback librdkafka logs every transient error a second time; these are retried
        // internally and surface as KafkaErrors where they matter (delivery reports, admin results).
        rd_kafka_conf_set_error_cb(conf, rdKafkaErrorCallback)
        if kind == .producer {
            rd_kafka_conf_set_dr_msg_cb(conf, rdKafkaDeliveryCallback)
        } else if callbacks.rebalance != nil {
            rd_kafka_conf_set_rebalance_cb(conf, rdKafkaRebalanceCallback)
        }
        let type = kind == .producer ? RD_KAFKA_PRODUCER : RD_KAFKA_CONSUMER
        // On success rd_kafka_new takes ownership of conf; on failure it is still ours.
        guard let handle = rd_kafka_new(type, conf, &errorBuffer, errorBuffer.count) else {
            rd_kafka_conf_destroy(conf)
            throw KafkaError(code: .clientCreation, reason: Self.string(from: errorBuffer))
        }
        self.handle = handle
        self.callbacks = callbacks
        self.blockingQueue = DispatchQueue(label: "scoreboard.kafka.\(label).blocking")
    }

    deinit {
        rd_kafka_destroy(handle)
    }

    /// Runs a blocking librdkafka call on ``blockingQueue`` and resumes the caller when it returns.
    func onBlockingQueue<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            blockingQueue.async { continuation.resume(with: Result { try body() }) }
        }
    }

    static func string(from buffer: [CChar]) -> String {
        let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// State reached from librdkafka's C callbacks, passed to C as the handle's opaque pointer.
final class RDKafkaCallbacks: Sendable {
    let logger: Logger
    let rebalance: (@Sendable (RebalanceEvent) -> Void)?
    /// librdkafka retries a refused connection every few dozen milliseconds and logs each failure: one warning per
    /// facility a minute is enough to say a broker is unreachable; the rest go to the debug level.
    let warningThrottle = LogThrottle(interval: .seconds(60))

    enum RebalanceEvent {
        case assign(UnsafeMutablePointer<rd_kafka_topic_partition_list_t>, handle: OpaquePointer)
        case revoke(UnsafeMutablePointer<rd_kafka_topic_partition_list_t>, handle: OpaquePointer)
        case error(rd_kafka_resp_err_t, handle: OpaquePointer)
    }

    /// Called (on the thread that polls the handle) when librdkafka raises a fatal error: the instance is unusable.
    let onFatal: (@Sendable () -> Void)?

    init(logger: Logger, rebalance: (@Sendable (RebalanceEvent) -> Void)? = nil, onFatal: (@Sendable () -> Void)? = nil) {
        self.logger = logger
        self.rebalance = rebalance
        self.onFatal = onFatal
    }

    static func from(_ opaque: UnsafeMutableRawPointer?) -> RDKafkaCallbacks? {
        opaque.map { Unmanaged<RDKafkaCallbacks>.fromOpaque($0).takeUnretainedValue() }
    }
}

// MARK: - C callbacks (plain functions: they capture nothing)

private let rdKafkaLogCallback: @convention(c) (OpaquePointer?, Int32, UnsafePointer<CChar>?, UnsafePointer<CChar>?) -> Void = {
    handle, level, facility, message in
    guard let handle, let callbacks = RDKafkaCallbacks.from(rd_kafka_opaque(handle)) else { return }
    let text = message.map { String(cString: $0) } ?? ""
    let facilityText = facility.map { String(cString: $0) } ?? ""
    // syslog levels. librdkafka logs a refused connection at 3 (LOG_ERR) and retries by itself, so 3 is a warning;
    // what the caller must act on reaches it as a KafkaError.
    var logLevel: Logger.Level = level <= 2 ? .error : level == 3 ? .warning : level <= 6 ? .info : .debug
    var metadata: Logger.Metadata = ["kafka.facility": "\(facilityText)"]
    if logLevel == .warning {
        switch callbacks.warningThrottle.admit(facilityText, now: ContinuousClock.now) {
        case .log(let suppressed):
            if suppressed > 0 { metadata["kafka.suppressed"] = "\(suppressed)" }
        case .suppress:
            logLevel = .debug
        }
    }
    callbacks.logger.log(level: logLevel, "\(text)", metadata: metadata)
}

/// Lets one line per key through each `interval`, and counts the ones it held back.
final class LogThrottle: Sendable {
    enum Verdict: Equatable {
        /// Log it, saying how many were suppressed since the last one.
        case log(suppressed: Int)
        case suppress
    }

    private let interval: Duration
    private let state = Mutex<[String: (last: ContinuousClock.Instant, suppressed: Int)]>([:])

    init(interval: Duration) {
        self.interval = interval
    }

    func admit(_ key: String, now: ContinuousClock.Instant) -> Verdict {
        state.withLock { state in
            if let entry = state[key], now - entry.last < interval {
                state[key]!.suppressed += 1
                return .suppress
            }
            let suppressed = state[key]?.suppressed ?? 0
            state[key] = (now, 0)
            return .log(suppressed: suppressed)
        }
    }
}

private let rdKafkaErrorCallback: @convention(c) (OpaquePointer?, Int32, UnsafePointer<CChar>?, UnsafeMutableRawPointer?) -> Void = {
    _, error, reason, opaque in
    guard let callbacks = RDKafkaCallbacks.from(opaque) else { return }
    let code = rd_kafka_resp_err_t(error)
    let isFatal = code == RD_KAFKA_RESP_ERR__FATAL
    callbacks.logger.log(level: isFatal ? .error : .debug, "librdkafka error", metadata: [
        "kafka.error.name": "\(String(cString: rd_kafka_err2name(code)))",
        "kafka.error": "\(reason.map { String(cString: $0) } ?? "")",
    ])
    if isFatal { callbacks.onFatal?() }
}

private let rdKafkaRebalanceCallback:
    @convention(c) (OpaquePointer?, rd_kafka_resp_err_t, UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?, UnsafeMutableRawPointer?) -> Void = {
        handle, error, partitions, opaque in
        guard let handle, let callbacks = RDKafkaCallbacks.from(opaque), let rebalance = callbacks.rebalance else { return }
        switch error {
        case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
            if let partitions { rebalance(.assign(partitions, handle: handle)) }
        case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
            if let partitions { rebalance(.revoke(partitions, handle: handle)) }
        default:
            rebalance(.error(error, handle: handle))
        }
    }

/// Owns an `rd_kafka_queue_t` reference. Queues are thread-safe in librdkafka.
final class RDKafkaQueue: @unchecked Sendable {
    let pointer: OpaquePointer

    init(_ pointer: OpaquePointer) {
        self.pointer = pointer
    }

    deinit {
        rd_kafka_queue_destroy(pointer)
    }
}
