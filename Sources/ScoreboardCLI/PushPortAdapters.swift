import Foundation
import Logging
import ScoreboardCore
import ScoreboardHTTP
import ScoreboardKafka
import ScoreboardPostgres
import ScoreboardPush
import ScoreboardRedis
import ServiceLifecycle
import Synchronization

// The adapters implement the push gateway's ports. The conformances live here, where the roles are composed: the push
// library knows only its ports, and the adapters know nothing of the push gateway.
extension RedisBoardReads: LiveBoards {}
extension ScoreLedger: StandingsArchive {}
extension ScoreLedger: PlayerRecords {}

/// The leaderboard-updates topic as the push gateway's ``UpdateSource``: a consumer group of its own per process
/// (every push gateway reads every partition), from the end of the log. The JSON of an update is decoded here; a
/// message that is not an update is skipped. Every `incarnationCheckInterval` the topic's id is compared with the one
/// seen at assignment: a new id (the topic was recreated, or a broker that keeps its log in memory restarted) is a new
/// log whose offsets start again from 0, where a consumer positioned past its end would wait for ever; the feed is told
/// first, then the consumer is moved to the start of the new log. (Updates of the new log read before the check sees
/// the new id, possible only when the new log has already grown past the old position, reach the feed as the old
/// epoch's; the client that resumes from one of them gets a snapshot, since it lies at or below the old log's end.)
struct KafkaUpdateSource: UpdateSource {
    let consumer: KafkaConsumerConfiguration
    let topic: String
    let admin: KafkaAdminClient
    let logger: Logger
    var incarnationCheckInterval: Duration = .seconds(2)

    func run(_ handle: @escaping @Sendable (UpdateSourceEvent) -> Void) async throws {
        let topicID = SeenTopicID()
        let handler = KafkaRebalanceHandler(onAssign: { [admin, topic] partitions in
            // Best effort: without an id now, the first check records it.
            let id = try? await withTimeout(.seconds(5)) { try await admin.topicID(of: topic) }
            topicID.id.withLock { $0 = $0 ?? id }
            handle(.assigned(partitions.map(\.partition)))
            return Dictionary(uniqueKeysWithValues: partitions.map { ($0, KafkaStartOffset.end) })
        })
        let kafka = try KafkaConsumer(configuration: consumer, topics: [topic], rebalanceHandler: handler, logger: logger)
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await self.watchIncarnations(kafka, topicID: topicID, handle: handle) }
                let decoder = JSONDecoder()
                for try await batch in kafka.batches.cancelOnGracefulShutdown() {
                    let updates = batch.messages.compactMap { message -> PartitionedUpdate? in
                        guard let changes = LeaderboardUpdatesMessage.decode(message.value, decoder: decoder) else {
                            logger.debug("skipped a leaderboard-updates message that is not an update", metadata: [
                                "kafka.partition": "\(message.partition)", "kafka.offset": "\(message.offset)",
                            ])
                            return nil
                        }
                        return PartitionedUpdate(partition: message.partition, update: SequencedUpdate(sequence: message.offset, changes: changes))
                    }
                    if !updates.isEmpty { handle(.updates(updates)) }
                }
                group.cancelAll()
            }
        } catch {
            await kafka.close()
            throw error
        }
        await kafka.close()
    }

    /// Until cancelled: compares the topic's id with the last one seen, and on a new incarnation tells the feed, then
    /// seeks every assigned partition to the start of the new log.
    private func watchIncarnations(_ kafka: KafkaConsumer, topicID: SeenTopicID, handle: @Sendable (UpdateSourceEvent) -> Void) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: incarnationCheckInterval)
            // `nil` when the broker does not answer or the topic is missing (between a restart and `topics apply`).
            guard let current = try? await withTimeout(.seconds(5), { [admin, topic] in try await admin.topicID(of: topic) }) else { continue }
            let previous = topicID.id.withLock { id -> String? in
                if id == nil { id = current }
                return id
            }
            guard let previous, previous != current else { continue }
            logger.warning("the leaderboard-updates topic was recreated: reading the new log from its start", metadata: [
                "kafka.topic.id.old": "\(previous)", "kafka.topic.id.new": "\(current)",
            ])
            handle(.newIncarnation)
            let starts = Dictionary(uniqueKeysWithValues: kafka.assignment.map { ($0, Int64(0)) })
            do {
                if !starts.isEmpty { try await kafka.seek(starts) }
                // Only now: a seek that failed is tried again at the next check (a second new epoch costs a snapshot).
                topicID.id.withLock { $0 = current }
            } catch {
                logger.error("seeking the new updates log failed: trying again at the next check", metadata: ["error": "\(error)"])
            }
        }
    }
}

/// A leaderboard-updates message as the push gateway reads it, of either schema version, since a rolling deploy has
/// workers publishing both: version 1 is one member's change ``LeaderboardUpdate``, version 2 a board's changes of one
/// worker batch ``BoardChanges``. Either becomes ``BoardChanges`` (a version 1 message with its one member), decoded in
/// one pass.
enum LeaderboardUpdatesMessage {
    /// Both versions' fields; which are present says which version it is.
    private struct AnyVersion: Decodable {
        var schemaVersion: Int
        var window: LeaderboardWindow
        var period: String
        var dimension: BoardDimension
        var dimensionValue: String?
        // Version 1.
        var userId: String?
        var total: Int64?
        var rank: Int?
        // Version 2.
        var members: [BoardChanges.Member]?
    }

    /// The board's changes, or `nil` for a message of another version or shape (skipped: one bad message must not
    /// stop the feed).
    static func decode(_ value: some Collection<UInt8>, decoder: JSONDecoder = JSONDecoder()) -> BoardChanges? {
        guard let message = try? decoder.decode(AnyVersion.self, from: Data(value)) else { return nil }
        let board = BoardKey(window: message.window, period: message.period, dimension: message.dimension, value: message.dimensionValue)
        switch (message.schemaVersion, message.members) {
        case (1, nil):
            guard let userID = message.userId, let total = message.total else { return nil }
            return BoardChanges(board: board, members: [BoardChanges.Member(userID: userID, total: total, rank: message.rank)])
        case (2, let members?) where !members.isEmpty:
            return BoardChanges(board: board, members: members)
        default:
            return nil
        }
    }
}

/// The topic id last seen, shared by the rebalance callback and the incarnation check.
private final class SeenTopicID: Sendable {
    let id = Mutex<String?>(nil)
}

extension PushPorts {
    /// The production ports: Redis's boards, PostgreSQL's stored totals, Kafka's leaderboard-updates topic.
    /// - Parameter consumer: a consumer group of this process's own.
    /// - Parameter producer: publishes a confirmed review's ban on the score-events topic.
    static func live(
        redis: RedisConnectionPool, ledger: ScoreLedger, consumer: KafkaConsumerConfiguration, admin: KafkaAdminClient, producer: KafkaProducer,
        topics: TopicNames, authenticator: JWTAuthenticator, logger: Logger
    ) -> PushPorts {
        let scoreEvents = KafkaScoreEvents(producer: producer, topics: topics)
        return PushPorts(
            live: RedisBoardReads(redis: redis), archive: ledger,
            updates: KafkaUpdateSource(consumer: consumer, topic: topics.leaderboardUpdates, admin: admin, logger: logger),
            authenticator: authenticator, players: ledger, analytics: ledger,
            fraudReviews: PostgresRedisFraudReviews(ledger: ledger, redis: redis, publishBan: { try await scoreEvents.publish($0) }),
            fraudFlags: KafkaFraudFlagSource(consumer: consumer, topic: topics.fraudFlags, logger: logger),
            notifications: KafkaNotificationSource(consumer: consumer, topic: topics.notifications, logger: logger))
    }
}

/// The notifications topic as the personal channels' ``NotificationSource``: read from its end (what was announced
/// before a client connected is listed by `GET /v1/users/{id}/achievements`) by a consumer group of the process's own.
struct KafkaNotificationSource: NotificationSource {
    let consumer: KafkaConsumerConfiguration
    let topic: String
    let logger: Logger

    func run(_ handle: @escaping @Sendable (NotificationSourceEvent) -> Void) async throws {
        try await KafkaTopicTail(consumer: consumer, groupSuffix: "-notifications", topic: topic, logger: logger)
            .run(AchievementNotification.self, onAssigned: { handle(.assigned) }) { read in handle(.notifications(read.map(\.value))) }
    }
}

/// The fraud-flags topic as the review feed's ``FraudFlagSource``: read from its end by a consumer group of the
/// process's own; a flag's partition and offset are its feed position.
struct KafkaFraudFlagSource: FraudFlagSource {
    let consumer: KafkaConsumerConfiguration
    let topic: String
    let logger: Logger

    func run(_ handle: @escaping @Sendable ([PositionedFraudFlag]) -> Void) async throws {
        try await run(onAssigned: {}, handle)
    }

    func run(onAssigned: @escaping @Sendable () -> Void, _ handle: @escaping @Sendable ([PositionedFraudFlag]) -> Void) async throws {
        let tail = KafkaTopicTail(consumer: consumer, groupSuffix: "-fraud", topic: topic, logger: logger)
        try await tail.run(FraudFlagMessage.self, onAssigned: onAssigned) { read in
            handle(read.map { PositionedFraudFlag(partition: $0.partition, offset: $0.offset, flag: $0.value) })
        }
    }
}

/// Reads one topic from its end, for one push process alone (a consumer group of its own: the updates' group id with
/// a suffix, so every process reads every partition), decoding each message as `Value` and skipping one that is not.
struct KafkaTopicTail {
    let consumer: KafkaConsumerConfiguration
    let groupSuffix: String
    let topic: String
    let logger: Logger

    /// Until graceful shutdown: each batch's decoded messages, with their partition and offset, in order;
    /// `onAssigned` at each assignment.
    func run<Value: Decodable>(
        _ type: Value.Type, onAssigned: (@Sendable () -> Void)? = nil,
        _ handle: @escaping @Sendable ([(partition: Int32, offset: Int64, value: Value)]) -> Void
    ) async throws {
        var configuration = consumer
        configuration.groupID += groupSuffix
        let handler = KafkaRebalanceHandler(onAssign: { partitions in
            onAssigned?()
            return Dictionary(uniqueKeysWithValues: partitions.map { ($0, KafkaStartOffset.end) })
        })
        let kafka = try KafkaConsumer(configuration: configuration, topics: [topic], rebalanceHandler: handler, logger: logger)
        do {
            let decoder = JSONDecoder()
            for try await batch in kafka.batches.cancelOnGracefulShutdown() {
                let values = batch.messages.compactMap { message -> (partition: Int32, offset: Int64, value: Value)? in
                    guard let value = try? decoder.decode(Value.self, from: Data(message.value)) else {
                        logger.debug("skipped a message that is not what the topic carries", metadata: [
                            "kafka.topic": "\(topic)", "kafka.partition": "\(message.partition)", "kafka.offset": "\(message.offset)",
                        ])
                        return nil
                    }
                    return (message.partition, message.offset, value)
                }
                if !values.isEmpty { handle(values) }
            }
        } catch {
            await kafka.close()
            throw error
        }
        await kafka.close()
    }
}

/// Fraud review: the records in PostgreSQL (``ScoreLedger``), and the effects outside it, run inside the review's
/// transaction before it commits (``ScoreLedger/reviewFraudFlag(id:decision:note:reviewer:at:beforeCommit:)``): the flag
/// closed in Redis (the adaptive limit ends), and for a confirmed flag the user's ban mark set (the gateway answers 403
/// at once) and the ban published on the score-events topic (`publishBan`, awaiting the broker's ack), where the worker
/// that owns the user's events takes them off every board, in order with those events (docs/architecture.md, "Fraud
/// flags and review"). All of it idempotent, so a review whose commit failed is made again.
///
/// Published before COMMIT rather than from an outbox after it: a ban that the broker did not take fails the review
/// (503, nothing recorded, made again), and a ban in the log whose review then failed to commit is still a ban: the
/// worker records it in `fraud_bans` itself, and the repeated review finds it. An outbox would need a process of its
/// own to publish what a push process left behind when it died between its COMMIT and the publish.
struct PostgresRedisFraudReviews: FraudReviews {
    let ledger: ScoreLedger
    let redis: RedisConnectionPool
    let publishBan: @Sendable (UserBanned) async throws -> Void

    func flags(_ query: FraudFlagQuery) async throws -> [ReviewedFraudFlag] { try await ledger.fraudFlags(query) }

    func review(flagID: String, decision: FraudReviewDecision, note: String, reviewer: String, at: Timestamp) async throws -> ReviewedFraudFlag {
        let (redis, publishBan) = (redis, publishBan)
        return try await ledger.reviewFraudFlag(id: flagID, decision: decision, note: note, reviewer: reviewer, at: at) { effects in
            // The ban mark before the flag is closed: a review that fails half-way never leaves the user less restricted.
            if let ban = effects.ban { try await RedisIngestState(redis: redis).confirmBan(userID: ban.userID) }
            try await RedisFraudMarks(redis: redis).close(flagID: effects.flag.flagID, userID: effects.flag.userID)
            // Last: once the ban is in the log only COMMIT is left, which a worker applying it may be waiting for (its
            // `fraud_bans` insert waits for this transaction's row).
            if let ban = effects.ban { try await publishBan(ban) }
        }
    }

    func audit(userID: String?, from: Int64?, to: Int64?, limit: Int) async throws -> [FraudAuditEntry] {
        try await ledger.fraudAudit(userID: userID, from: from, to: to, limit: limit)
    }

    func recentEvents(userID: String, limit: Int) async throws -> [ScoreEvent] { try await ledger.recentEvents(userID: userID, limit: limit) }
}

/// The analytics API reads the workers' analytics cells from the ledger's stage tables (ScoreLedger+Analytics.swift).
extension ScoreLedger: AnalyticsCells {}
