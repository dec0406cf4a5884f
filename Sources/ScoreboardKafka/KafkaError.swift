import ScoreboardCore
import CRdKafka

/// The one error type of the Kafka module: what went wrong, and librdkafka's own code and text where it said so.
public struct KafkaError: Error, CustomStringConvertible, Sendable {
    /// What kind of failure this is. A struct of static values, so that codes can be added without breaking callers.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { name }

        public static let configuration = Code(name: "configuration")
        public static let runtimeUnsupported = Code(name: "runtimeUnsupported")
        public static let clientCreation = Code(name: "clientCreation")
        public static let messageDelivery = Code(name: "messageDelivery")
        public static let produce = Code(name: "produce")
        public static let consume = Code(name: "consume")
        public static let commit = Code(name: "commit")
        public static let seek = Code(name: "seek")
        public static let admin = Code(name: "admin")
        public static let timeout = Code(name: "timeout")
        public static let rebalance = Code(name: "rebalance")
        public static let shutdown = Code(name: "shutdown")
    }

    public var code: Code
    /// librdkafka's `rd_kafka_resp_err_t`, when the failure came from librdkafka.
    public var rdKafkaCode: Int32?
    /// A human-readable reason (librdkafka's `rd_kafka_err2str` text where there is one).
    public var reason: String
    /// librdkafka says the client can no longer be used (for example a fatal idempotent-producer error).
    public var isFatal: Bool
    /// librdkafka says the same request may succeed if tried again.
    public var isRetriable: Bool
    let file: String
    let line: Int

    init(
        code: Code, rdKafkaCode: Int32? = nil, reason: String, isFatal: Bool = false, isRetriable: Bool = false,
        file: String = #fileID, line: Int = #line
    ) {
        self.code = code
        self.rdKafkaCode = rdKafkaCode
        self.reason = reason
        self.isFatal = isFatal
        self.isRetriable = isRetriable
        self.file = file
        self.line = line
    }

    /// The librdkafka error name, for example `_MSG_TIMED_OUT` or `UNKNOWN_TOPIC_OR_PART`.
    public var rdKafkaName: String? {
        rdKafkaCode.map { String(cString: rd_kafka_err2name(rd_kafka_resp_err_t($0))) }
    }

    public var description: String {
        var text = "KafkaError(\(code)): \(reason)"
        if let name = rdKafkaName { text += " [\(name)]" }
        return text + " (\(file):\(line))"
    }

    static func rdKafka(
        _ error: rd_kafka_resp_err_t, code: Code, context: String? = nil, file: String = #fileID, line: Int = #line
    ) -> KafkaError {
        let text = String(cString: rd_kafka_err2str(error))
        return KafkaError(
            code: code, rdKafkaCode: error.rawValue, reason: context.map { "\($0): \(text)" } ?? text,
            isRetriable: RDKafkaErrorCodes.isRetriable(error), file: file, line: line)
    }

    /// Builds the error from an `rd_kafka_error_t`, which carries its own fatal and retriable flags. Does not destroy it.
    static func rdKafka(
        errorObject: OpaquePointer, code: Code, context: String? = nil, file: String = #fileID, line: Int = #line
    ) -> KafkaError {
        let text = String(cString: rd_kafka_error_string(errorObject))
        return KafkaError(
            code: code, rdKafkaCode: rd_kafka_error_code(errorObject).rawValue,
            reason: context.map { "\($0): \(text)" } ?? text,
            isFatal: rd_kafka_error_is_fatal(errorObject) != 0,
            isRetriable: rd_kafka_error_is_retriable(errorObject) != 0, file: file, line: line)
    }
}

enum RDKafkaErrorCodes {
    static func isRetriable(_ error: rd_kafka_resp_err_t) -> Bool {
        switch error {
        case RD_KAFKA_RESP_ERR__TRANSPORT, RD_KAFKA_RESP_ERR__TIMED_OUT, RD_KAFKA_RESP_ERR__MSG_TIMED_OUT,
            RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN, RD_KAFKA_RESP_ERR__QUEUE_FULL,
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS:
            return true
        default:
            return false
        }
    }
}

extension KafkaError {
    /// A message that was never handed to librdkafka because its producer is stopping.
    public static var shuttingDown: KafkaError { KafkaError(code: .shutdown, reason: "the producer is shutting down") }

    /// The broker does not know a topic a client needs (not created yet: run `scoreboard topics apply`).
    public static func unknownTopic(_ topic: String) -> KafkaError {
        KafkaError(code: .admin, reason: "topic \(topic) does not exist; create it with `scoreboard topics apply`")
    }
}

extension KafkaError: ServerFailure {
    public var server: ServerKind { .kafka }
}
