/// A Kafka topic as `topics/*.yaml` declares it.
public struct TopicDefinition: Hashable, Sendable, Codable {
    public var name: String
    public var partitions: Int32
    public var replicationFactor: Int32
    /// How long the broker keeps messages, in milliseconds; -1 keeps them forever.
    public var retentionMilliseconds: Int64
    public var cleanupPolicy: String
    /// What the message key is, in words and as the field it is taken from.
    public var key: Key
    /// The JSON Schema of message values.
    public var valueSchema: JSONValue
    public var description: String

    public struct Key: Hashable, Sendable, Codable {
        public var field: String
        public var description: String

        public init(field: String, description: String) {
            self.field = field
            self.description = description
        }
    }

    public init(
        name: String, partitions: Int32, replicationFactor: Int32, retentionMilliseconds: Int64, cleanupPolicy: String,
        key: Key, valueSchema: JSONValue, description: String
    ) {
        self.name = name
        self.partitions = partitions
        self.replicationFactor = replicationFactor
        self.retentionMilliseconds = retentionMilliseconds
        self.cleanupPolicy = cleanupPolicy
        self.key = key
        self.valueSchema = valueSchema
        self.description = description
    }

    enum CodingKeys: String, CodingKey {
        case name, partitions, replicationFactor, retentionMilliseconds = "retentionMs", cleanupPolicy, key, valueSchema, description
    }

    /// The topic-level configs the broker should hold.
    public var configs: [String: String] {
        ["retention.ms": String(retentionMilliseconds), "cleanup.policy": cleanupPolicy]
    }

    /// Checks the definition makes sense before anything is created from it.
    public func validate() throws(ScoreboardError) {
        var problems: [String] = []
        if name.isEmpty || name.count > 249 || !name.utf8.allSatisfy({ byte in
            byte.isASCIILetterOrDigit || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "-")
        }) {
            problems.append("name: a Kafka topic name is 1 to 249 characters of A-Z a-z 0-9 . _ -")
        }
        if partitions < 1 { problems.append("partitions: at least 1") }
        if replicationFactor < 1 { problems.append("replicationFactor: at least 1") }
        if retentionMilliseconds < -1 || retentionMilliseconds == 0 { problems.append("retentionMs: -1 or a positive number") }
        if !["delete", "compact", "compact,delete"].contains(cleanupPolicy) { problems.append("cleanupPolicy: delete, compact or compact,delete") }
        do { _ = try JSONSchema(valueSchema) } catch { problems.append("valueSchema\(error.pointer): \(error.message)") }
        if !problems.isEmpty { throw ScoreboardError(code: .invalidDefinition, reasons: problems.map { "\(name): \($0)" }) }
    }
}

/// What the broker has for a topic, as far as reconciliation cares.
public struct ObservedTopic: Hashable, Sendable {
    public var partitions: Int
    /// `nil` when the broker cannot tell (it does not implement DescribeConfigs).
    public var configs: [String: String]?

    public init(partitions: Int, configs: [String: String]?) {
        self.partitions = partitions
        self.configs = configs
    }
}

/// The outcome of comparing one declared topic with the broker.
public enum TopicReconciliation: Hashable, Sendable {
    case create
    case upToDate
    /// The topic exists but differs; each entry says how. Never fixed automatically: fewer partitions cannot be
    /// undone and more would move keys to other partitions, breaking per-user order.
    case drift([String])

    public static func compare(_ definition: TopicDefinition, with observed: ObservedTopic?) -> TopicReconciliation {
        guard let observed else { return .create }
        var differences: [String] = []
        if observed.partitions != Int(definition.partitions) {
            differences.append("partitions: declared \(definition.partitions), broker has \(observed.partitions)")
        }
        if let configs = observed.configs {
            for (key, declared) in definition.configs.sorted(by: { $0.key < $1.key }) {
                if let actual = configs[key], actual != declared {
                    differences.append("\(key): declared \(declared), broker has \(actual)")
                }
            }
        }
        return differences.isEmpty ? .upToDate : .drift(differences)
    }
}
