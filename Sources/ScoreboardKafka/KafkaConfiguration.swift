/// Settings shared by producers, consumers and the admin client.
public struct KafkaClientConfiguration: Sendable {
    /// `host:port` pairs to bootstrap from.
    public var bootstrapServers: [String]
    public var clientID: String = "scoreboard"
    /// How long to wait for a broker socket before giving up on one attempt.
    public var socketTimeout: Duration = .seconds(10)
    /// How the client proves who it is to the brokers.
    public var authentication: Authentication = .none
    /// Extra librdkafka properties, for settings this struct does not name. Applied last.
    public var additionalProperties: [String: String] = [:]

    public enum Authentication: Sendable, Hashable {
        /// No authentication (a broker on loopback, such as the local stack's).
        case none
        /// SASL/PLAIN user and password (`security.protocol=SASL_PLAINTEXT`); put TLS in front where the network is
        /// not private.
        case saslPlain(username: String, password: String)
    }

    public init(bootstrapServers: [String]) {
        self.bootstrapServers = bootstrapServers
    }

    var properties: [String: String] {
        var result = [
            "bootstrap.servers": bootstrapServers.joined(separator: ","),
            "client.id": clientID,
            "socket.timeout.ms": String(socketTimeout.milliseconds),
            // Brokers are on loopback or a private network; broker address family auto-detect is what we want.
            "log.connection.close": "false",
        ]
        if case .saslPlain(let username, let password) = authentication {
            result["security.protocol"] = "SASL_PLAINTEXT"
            result["sasl.mechanism"] = "PLAIN"
            result["sasl.username"] = username
            result["sasl.password"] = password
        }
        return result
    }
}

/// Producer settings. Defaults are durable: idempotent, `acks=all`.
public struct KafkaProducerConfiguration: Sendable {
    public var client: KafkaClientConfiguration
    /// Exactly one copy per message in the log even when librdkafka retries (`enable.idempotence`).
    public var isIdempotent = true
    /// How long librdkafka waits to fill a batch (`linger.ms`).
    public var linger: Duration = .milliseconds(5)
    /// Most messages in one batch (`batch.num.messages`).
    public var batchMaxMessages = 10_000
    /// Most bytes in one batch (`batch.size`).
    public var batchMaxBytes = 1_000_000
    /// Bound on a message's whole life: after this its delivery report says it failed (`message.timeout.ms`).
    /// Keep it bounded so that a dead broker surfaces as an error instead of a hang.
    public var deliveryTimeout: Duration = .seconds(30)
    /// Messages librdkafka may hold before `send` waits for room (`queue.buffering.max.messages`).
    public var queueMaxMessages = 500_000
    /// How long ``KafkaProducer/shutdown()`` waits for outstanding messages before failing them.
    public var shutdownFlushTimeout: Duration = .seconds(10)
    public var compression: Compression = .none

    public enum Compression: String, Sendable {
        case none, gzip, snappy, lz4, zstd
    }

    public init(client: KafkaClientConfiguration) {
        self.client = client
    }

    var properties: [String: String] {
        var result = client.properties
        result["enable.idempotence"] = isIdempotent ? "true" : "false"
        result["acks"] = "all"
        result["linger.ms"] = String(linger.milliseconds)
        result["batch.num.messages"] = String(batchMaxMessages)
        result["batch.size"] = String(batchMaxBytes)
        result["message.timeout.ms"] = String(deliveryTimeout.milliseconds)
        result["queue.buffering.max.messages"] = String(queueMaxMessages)
        result["compression.codec"] = compression.rawValue
        // A topic that does not exist is a deployment error (run `scoreboard topics apply`), not something to create
        // with the broker's default partition count: a producer that auto-created `leaderboard-updates` before
        // `topics apply` left it with the wrong number of partitions for good.
        result["allow.auto.create.topics"] = "false"
        return result.merging(client.additionalProperties) { _, new in new }
    }
}

/// Consumer-group settings. Offsets are committed by hand (or stored elsewhere): auto-commit is off.
public struct KafkaConsumerConfiguration: Sendable {
    public var client: KafkaClientConfiguration
    public var groupID: String
    /// The group coordinator declares a member dead after this (`session.timeout.ms`). A join takes about half of it
    /// on our local broker, so local runs and tests set it to a few seconds.
    public var sessionTimeout: Duration = .seconds(10)
    public var heartbeatInterval: Duration = .seconds(1)
    /// Where to start when the group has no committed offset (`auto.offset.reset`).
    public var startWithoutCommit: StartWithoutCommit = .earliest
    /// Most messages handed to Swift in one batch.
    public var maxBatchSize = 5_000
    /// How long one librdkafka poll waits for a first message before checking for cancellation.
    public var pollTimeout: Duration = .milliseconds(100)
    /// How often the member refreshes topic metadata (`topic.metadata.refresh.interval.ms`). A subscribed topic that
    /// appears (after `topics apply`, or a broker that lost its log) or grows partitions is only assigned after a
    /// refresh: librdkafka's five-minute default left a group idle that long after a broker restart.
    public var metadataRefreshInterval: Duration = .seconds(10)
    /// The longest a fetch waits at the broker for records (`fetch.wait.max.ms`). Apache Kafka answers as soon as there
    /// is data, so there this only sets how often an idle consumer asks again and costs no latency. The local broker
    /// (Tansu, memory storage) always holds a fetch for about half of it, and, worse, a fetch whose own work takes
    /// longer than the wait comes back empty; that work grows with the size of the partitions fetched (about 100-200
    /// ms for one partition of 125k record batches). With a 10 ms wait a consumer therefore read nothing at all once
    /// the log had grown, and the full worker-kill run stalled for good after 17 minutes (docs/reliability.md).
    /// librdkafka's own default, 500 ms, keeps that margin.
    public var fetchWait: Duration = .milliseconds(500)

    public enum StartWithoutCommit: String, Sendable {
        case earliest, latest
    }

    public init(client: KafkaClientConfiguration, groupID: String) {
        self.client = client
        self.groupID = groupID
    }

    var properties: [String: String] {
        var result = client.properties
        result["group.id"] = groupID
        result["enable.auto.commit"] = "false"
        result["enable.auto.offset.store"] = "false"
        result["auto.offset.reset"] = startWithoutCommit.rawValue
        result["session.timeout.ms"] = String(sessionTimeout.milliseconds)
        result["heartbeat.interval.ms"] = String(heartbeatInterval.milliseconds)
        // Eager rebalancing: every revoke is a full stop before the next assign, which keeps the
        // "finish the batch in hand, then hand the partition over" rule simple.
        result["partition.assignment.strategy"] = "range,roundrobin"
        result["enable.partition.eof"] = "false"
        result["topic.metadata.refresh.interval.ms"] = String(metadataRefreshInterval.milliseconds)
        result["fetch.wait.max.ms"] = String(fetchWait.milliseconds)
        return result.merging(client.additionalProperties) { _, new in new }
    }
}

extension Duration {
    /// Whole milliseconds, for librdkafka properties and timeouts that cross into C.
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
