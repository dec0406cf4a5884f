import Foundation
import Logging
import ScoreboardCore
import ScoreboardDefinitions
@testable import ScoreboardKafka
import ScoreboardRedis
@testable import ScoreboardWorker
import Testing

/// The pipelined worker's guarantees, in process: the outputs run after the commit, from the outbox when a worker
/// stopped in between, never lower a board, one message per board per batch, and nothing from a fenced worker.
extension WorkerInProcessTests {
    static let allTimeGlobal = BoardKey(window: .allTime, period: "all", dimension: .global, value: nil)

    /// Another worker on the same ports (a restarted process, or the partition's next owner).
    static func worker(on harness: Harness, updateSchemaVersion: Int = 2) -> ScoreWorker {
        var configuration = ScoreWorker.Configuration(
            consumer: KafkaConsumerConfiguration(client: KafkaClientConfiguration(bootstrapServers: ["unused:1"]), groupID: "g"),
            topics: TopicNames())
        configuration.retry = RetryBackoff(initial: .milliseconds(1), maximum: .milliseconds(2))
        configuration.updateSchemaVersion = updateSchemaVersion
        return ScoreWorker(
            configuration: configuration, catalog: pipelines.leaderboards, actions: pipelines.actions,
            ports: WorkerPorts(ledger: harness.ledger, boards: harness.boards, outputs: harness.outputs, topics: harness.topics),
            logger: Logger(label: "test"))
    }

    static func claim(_ worker: ScoreWorker) async throws {
        _ = try await worker.assign([KafkaTopicPartition(topic: topic, partition: 0)], topic: topic)
    }

    /// The fault: a worker stops right after its batch commits, before any output (boards, updates, dead letters).
    /// The partition's next owner finds the outbox rows when it claims the partition and produces the outputs from the
    /// committed totals; the stopped worker's late attempt is fenced and publishes nothing.
    @Test func aCrashBetweenCommitAndOutputsConvergesAtTheNextClaim() async throws {
        let harness = Harness()
        try await harness.claim()
        let batch = try Self.batch([("ann", "complete-quest", 10), ("bob", "complete-quest", 10)], raw: ["{not json"])
        let committed = try #require(try await harness.worker.commit(harness.worker.decode(batch, topic: Self.topic), topic: Self.topic))
        #expect(harness.ledger.snapshot.commits == 1)
        #expect(harness.boards.snapshot.isEmpty && harness.outputs.updates.isEmpty && harness.outputs.boardChanges.isEmpty && harness.outputs.deadLetters.isEmpty)
        #expect(harness.ledger.snapshot.outbox.count == 2, "one leaderboard entry and one dead-letter entry for partition 0")

        let next = Self.worker(on: harness)
        try await Self.claim(next)
        #expect(harness.globalAllTime() == ["ann": quest, "bob": quest])
        #expect(harness.publishedTotals(on: Self.allTimeGlobal.id) == [quest, quest])
        #expect(harness.outputs.deadLetters.map(\.sourceOffset) == [2])
        #expect(harness.ledger.snapshot.outbox.isEmpty)

        // The first worker comes back to its projection: fenced, it publishes nothing more.
        let published = harness.outputs.boardChanges.count
        #expect(try await harness.worker.project(committed, topic: Self.topic) == false)
        #expect(harness.outputs.boardChanges.count == published && harness.outputs.deadLetters.count == 1)
    }

    /// The fault: the outputs fail (Redis down) after the commit, and the worker stops before they succeed. Nothing is
    /// lost: the restarted worker projects the outbox at its claim.
    @Test func outputsThatFailUntilTheWorkerStopsAreProjectedAtTheNextClaim() async throws {
        let harness = Harness()
        try await harness.claim()
        harness.boards.failNextWrites(1, with: RedisError(code: .connection, reason: "Connection refused"))
        let committed = try #require(try await harness.worker.commit(
            harness.worker.decode(try Self.batch([("ann", "complete-quest", 10)]), topic: Self.topic), topic: Self.topic))
        await #expect(throws: RedisError.self) { try await harness.worker.project(committed, topic: Self.topic) }
        #expect(harness.globalAllTime().isEmpty && harness.ledger.snapshot.outbox.count == 1)

        try await Self.claim(Self.worker(on: harness))
        #expect(harness.globalAllTime() == ["ann": quest])
        #expect(harness.ledger.snapshot.outbox.isEmpty)
    }

    /// The fault: two batches' outputs run out of order (a late projection: a slow projector, or a previous owner's).
    /// The board keeps the newer total, and what is published for the member never goes back either.
    @Test func aLateProjectionNeverLowersABoard() async throws {
        let harness = Harness()
        try await harness.claim()
        let first = try #require(try await harness.worker.commit(
            harness.worker.decode(try Self.batch([("ann", "complete-quest", 10)]), topic: Self.topic), topic: Self.topic))
        let second = try #require(try await harness.worker.commit(
            harness.worker.decode(try Self.batch([("ann", "complete-quest", 10)], from: 1), topic: Self.topic), topic: Self.topic))
        #expect(try await harness.worker.project(second, topic: Self.topic))
        #expect(try await harness.worker.project(first, topic: Self.topic))
        #expect(harness.globalAllTime() == ["ann": 2 * quest])
        #expect(harness.publishedTotals(on: Self.allTimeGlobal.id) == [2 * quest, 2 * quest])
        #expect(harness.ledger.snapshot.outbox.isEmpty)
    }

    /// Version 2: a batch that moves several members of a board publishes one message for that board, with every
    /// changed member, and the same totals the version 1 messages carry.
    @Test func oneMessagePerBoardPerBatch() async throws {
        let harness = Harness()
        let worker = Self.worker(on: harness, updateSchemaVersion: 2)
        try await Self.claim(worker)
        let batch = try Self.batch([("ann", "complete-quest", 10), ("bob", "complete-quest", 10), ("ann", "complete-quest", 10), ("cy", "complete-quest", 10)])
        await worker.applyUntilDone(batch, topic: Self.topic)
        let changes = harness.outputs.boardChanges
        #expect(harness.outputs.updates.isEmpty, "no version 1 messages")
        #expect(Set(changes.map(\.board)).count == changes.count, "one message per board")
        let touched = Set(try Self.batch([("ann", "complete-quest", 10)]).messages.flatMap { message in
            Self.pipelines.leaderboards.boards(for: try JSONDecoder().decode(ScoreEvent.self, from: Data(message.value)))
        })
        #expect(Set(changes.map(\.boardKey)) == touched)
        for change in changes {
            #expect(change.schemaVersion == 2)
            #expect(change.members.map(\.userID) == ["ann", "bob", "cy"])
        }
        let global = try #require(changes.first { $0.boardKey == Self.allTimeGlobal })
        #expect(global.members.map(\.total) == [2 * quest, quest, quest])
        #expect(global.members.map(\.rank) == [1, 2, 2])
        #expect(global.memberUpdates.map(\.total) == [2 * quest, quest, quest])
    }

    /// The switch back to version 1 (for consumers that read only it): one message per member per board, same totals.
    @Test func versionOneStillPublishesOneMessagePerMemberPerBoard() async throws {
        let harness = Harness()
        let worker = Self.worker(on: harness, updateSchemaVersion: 1)
        try await Self.claim(worker)
        await worker.applyUntilDone(try Self.batch([("ann", "complete-quest", 10), ("bob", "complete-quest", 10)]), topic: Self.topic)
        #expect(harness.outputs.boardChanges.isEmpty)
        let boards = Set(harness.outputs.updates.map(\.board))
        #expect(harness.outputs.updates.count == 2 * boards.count)
        #expect(harness.publishedTotals(on: Self.allTimeGlobal.id) == [quest, quest])
    }

    /// The fault: the connection drops during COMMIT, which went through. The retry finds the events applied and owes
    /// nothing itself, so the outputs must come from the outbox rows the first attempt committed (before the fix they
    /// stayed pending until the next claim, and the board missed the batch: the PostgreSQL restart chaos scenario).
    @Test func aCommitThatSucceededDespiteAnErrorStillGetsItsOutputs() async throws {
        struct ConnectionClosed: Error {}
        let harness = Harness()
        try await harness.claim()
        harness.ledger.failAfterNextCommits(1, with: ConnectionClosed())
        await harness.worker.applyUntilDone(try Self.batch([("ann", "complete-quest", 10), ("bob", "complete-quest", 10)]), topic: Self.topic)
        #expect(harness.ledger.snapshot.commits == 2, "the first attempt committed, the retry committed nothing new")
        #expect(harness.globalAllTime() == ["ann": quest, "bob": quest])
        #expect(harness.ledger.snapshot.outbox.isEmpty)
    }

    /// A batch fenced at its commit (another worker claimed the partition) writes no outbox row and runs no output.
    @Test func aFencedBatchLeavesNoOutboxRow() async throws {
        let harness = Harness()
        try await harness.claim()
        try await Self.claim(Self.worker(on: harness))
        #expect(try await harness.worker.commit(
            harness.worker.decode(try Self.batch([("ann", "complete-quest", 10)], raw: ["junk"]), topic: Self.topic), topic: Self.topic) == nil)
        #expect(harness.ledger.snapshot.outbox.isEmpty && harness.ledger.snapshot.commits == 0)
        #expect(harness.outputs.boardChanges.isEmpty && harness.outputs.deadLetters.isEmpty && harness.boards.snapshot.isEmpty)
    }
}

/// The Kafka adapter encodes both versions of leaderboard-updates in a form the topic's schema accepts.
struct WorkerKafkaEncodingTests {
    @Test func leaderboardUpdatesOfBothVersionsMatchTheTopicsSchema() throws {
        let topics = try TopicCatalog.load(directory: GatewayHarness.root.appendingPathComponent("topics"))
        let schema = try #require(try topics.valueSchema(of: TopicNames.leaderboardUpdatesBase))
        let board = BoardKey(window: .daily, period: "2026-11-25", dimension: .region, value: "eu")
        let changes = BoardChanges(board: board, members: [.init(userID: "ann", total: 40, rank: 1), .init(userID: "bob", total: 20, rank: nil)])
        let messages = [try KafkaWorkerOutputs.message(for: changes, topic: "t")]
            + (try changes.memberUpdates.map { try KafkaWorkerOutputs.message(for: $0, topic: "t") })
        for message in messages {
            #expect(schema.validate(try JSONValue.parse(message.value)).isEmpty, "\(String(decoding: message.value, as: UTF8.self))")
            #expect(message.key == Array("daily:region:eu".utf8))
        }
        #expect(try JSONDecoder().decode(BoardChanges.self, from: Data(messages[0].value)) == changes)
        // A version 2 message without members, or a member without a total, is refused.
        let empty = try JSONValue.parse(Array(#"{"schemaVersion":2,"board":"b","window":"daily","period":"p","dimension":"global","members":[]}"#.utf8))
        #expect(!schema.validate(empty).isEmpty)
        let partial = try JSONValue.parse(Array(#"{"schemaVersion":2,"board":"b","window":"daily","period":"p","dimension":"global","members":[{"userId":"a"}]}"#.utf8))
        #expect(!schema.validate(partial).isEmpty)
    }
}
