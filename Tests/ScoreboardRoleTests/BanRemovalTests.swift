import Foundation
import Logging
import NIOCore
import ScoreboardCore
import ScoreboardDefinitions
@testable import ScoreboardKafka
@testable import ScoreboardPush
@testable import ScoreboardWorker
import Testing

// A confirmed fraud flag's ban, carried through the stream (issue 11): the worker applies the ban record in its batch
// (memory ports), the push gateway's board memory and frames apply the removal it publishes, and the messages match
// their topics' schemas.

extension WorkerInProcessTests {
    /// The ban record as the push role publishes it, on the user's partition.
    static func banMessage(_ user: String, offset: Int64) throws -> KafkaConsumerMessage {
        let ban = UserBanned(userID: user, flagID: "flag-\(user)", bannedAt: 1_764_000_100_000)
        let message = try KafkaScoreEvents.message(for: ban, topic: topic)
        return KafkaConsumerMessage(
            topic: topic, partition: 0, offset: offset, key: ArraySlice(message.key ?? []), value: ArraySlice(message.value), timestampMilliseconds: nil)
    }

    /// A batch of score events (`batch(_:from:)`) with a ban record at `position`.
    static func batch(_ events: [(user: String, action: String, points: Int64)], from offset: Int64, banning user: String, at position: Int) throws -> KafkaConsumerBatch {
        var messages = try batch(events, from: offset).messages
        for index in messages.indices where index >= position { messages[index].offset += 1 }
        messages.insert(try banMessage(user, offset: offset + Int64(position)), at: position)
        return KafkaConsumerBatch(messages: messages)
    }

    /// Mallory leads every board; a batch bans her, with one of her events and one of cy's behind the ban. Her totals go,
    /// she leaves every board (one message per board marks her removed, after cy's raise), her event is stored and not
    /// counted, and the same batch delivered again changes nothing and publishes nothing. Before the fix the ban record
    /// was a dead letter and her event counted.
    @Test func aBanRecordTakesTheUserOffEveryBoardOnceAndHerLaterEventsDoNotCount() async throws {
        let harness = Harness()
        try await harness.claim()
        await harness.worker.applyUntilDone(
            try Self.batch([("mallory", "complete-quest", 10), ("mallory", "complete-quest", 10), ("ann", "complete-quest", 10)]), topic: Self.topic)
        // The batches' day, week and month are long over (their Redis keys expired): only the all-time boards remain.
        let now = Timestamp.now()
        let malloryBoards = Set(harness.boards.snapshot.filter { $0.value["mallory"] != nil }.keys)
            .filter { Self.pipelines.leaderboards.redisExpiry(of: $0).map { $0 > now } ?? true }
        #expect(malloryBoards.count == 3 && harness.globalAllTime() == ["mallory": 2 * quest, "ann": quest])
        let published = harness.outputs.boardChanges.count

        let banning = try Self.batch([("mallory", "complete-quest", 10), ("cy", "complete-quest", 10)], from: 3, banning: "mallory", at: 0)
        await harness.worker.applyUntilDone(banning, topic: Self.topic)
        #expect(harness.outputs.deadLetters.isEmpty, "the ban is read, not dead-lettered")
        #expect(harness.globalAllTime() == ["ann": quest, "cy": quest])
        #expect(malloryBoards.allSatisfy { harness.boards.snapshot[$0]?["mallory"] == nil })
        #expect(!harness.ledger.snapshot.totals.keys.contains { $0.userID == "mallory" })
        #expect(harness.ledger.snapshot.banned == ["mallory"])
        #expect(harness.ledger.snapshot.eventIDs.count == 5, "her late event is stored")
        let changes = harness.outputs.boardChanges.dropFirst(published)
        #expect(Set(changes.map(\.board)).count == changes.count, "one message per board")
        let removals = changes.filter { $0.members.contains { $0.isRemoved } }
        #expect(Set(removals.map(\.boardKey)) == malloryBoards)
        let global = try #require(changes.first { $0.boardKey == Self.allTimeGlobal })
        // Cy ties with ann for first: the rank published leaves mallory out already.
        #expect(global.members == [.init(userID: "cy", total: quest, rank: 1), .removed("mallory")])
        #expect(harness.ledger.snapshot.outbox.isEmpty)

        // The same messages again (a replay): the events are known, the ban finds nothing left to delete.
        let before = (harness.outputs.boardChanges.count, harness.boards.snapshot, harness.ledger.snapshot.totals)
        await harness.worker.applyUntilDone(banning, topic: Self.topic)
        #expect(harness.outputs.boardChanges.count == before.0 && harness.boards.snapshot == before.1 && harness.ledger.snapshot.totals == before.2)
    }

    /// The fault: the worker stops between the ban's commit and its outputs. The partition's next owner finds the
    /// outbox entry at its claim, takes the user off the boards and publishes the removals.
    @Test func aBanWhoseOutputsWereNotRunIsProjectedAtTheNextClaim() async throws {
        let harness = Harness()
        try await harness.claim()
        await harness.worker.applyUntilDone(try Self.batch([("mallory", "complete-quest", 10), ("ann", "complete-quest", 10)]), topic: Self.topic)
        let banning = try Self.batch([], from: 2, banning: "mallory", at: 0)
        _ = try #require(try await harness.worker.commit(harness.worker.decode(banning, topic: Self.topic), topic: Self.topic))
        #expect(harness.globalAllTime()["mallory"] == quest && harness.ledger.snapshot.outbox.count == 1)
        let published = harness.outputs.boardChanges.count

        try await Self.claim(Self.worker(on: harness))
        #expect(harness.globalAllTime() == ["ann": quest])
        let recovered = harness.outputs.boardChanges.dropFirst(published)
        #expect(recovered.contains { $0.boardKey == Self.allTimeGlobal && $0.members.contains(.removed("mallory")) })
        #expect(harness.ledger.snapshot.outbox.isEmpty)
    }
}

extension BoardMemoryTests {
    /// A removal drops the member from the held board: everyone below moves up a place, and the encoded answer kept for
    /// the board is not answered again. Before the fix nothing removed a member: the held board kept a banned user.
    @Test func aRemovalDropsTheMemberAndTheMembersBelowMoveUp() async throws {
        let live = MemoryLiveBoards([Self.board: ["mallory": 90, "ann": 80, "bob": 40]])
        try await withMemory(live: live) { memory in
            let reader = BoardReader(live: live, archive: MemoryStandingsArchive(), catalog: PushWorld.allBoards, memory: memory)
            memory.observe(.assigned([0]))
            memory.apply(update(.allTime(.guild, "g"), ["x": 1]), sequence: 1, partition: 0)
            await loaded(Self.board, in: memory)
            let before = try await reader.topJSON(Self.board, limit: 10, offset: 0)
            #expect(slice(memory)??.entries.map { "\($0.userID) #\($0.rank)" } == ["mallory #1", "ann #2", "bob #3"])

            memory.apply(BoardChanges(board: Self.board, members: [.removed("mallory")]), sequence: 2, partition: 0)
            #expect(slice(memory)??.entries.map { "\($0.userID) #\($0.rank)" } == ["ann #1", "bob #2"])
            #expect(slice(memory)??.members == 2)
            let after = try await reader.topJSON(Self.board, limit: 10, offset: 0)
            #expect(after != before && !String(buffer: after).contains("mallory"))
            // Removing someone not on the board changes nothing.
            memory.apply(BoardChanges(board: Self.board, members: [.removed("nobody")]), sequence: 3, partition: 0)
            #expect(slice(memory)??.members == 2)
        }
    }
}

/// How a removal travels: in the update frame, through a slow client's merging, and in the topics' messages.
struct BanMessageTests {
    @Test func theUpdateFrameMarksARemovedMemberAndMergingKeepsTheRemoval() throws {
        let board = BoardKey.allTime()
        let update = SequencedUpdate(sequence: 7, changes: BoardChanges(board: board, members: [.init(userID: "ann", total: 80, rank: 1), .removed("mallory")]))
        let json = String(buffer: update.frame.json)
        #expect(json.contains(#"{"rank":1,"total":80,"userId":"ann"}"#))
        #expect(json.contains(#"{"removed":true,"total":0,"userId":"mallory"}"#))
        // Bytes a client decodes as the API says (openapi.yaml UpdateFrame).
        let frame = try JSONValue.parse(Array(json.utf8))
        #expect(frame["update"]?["members"]?.arrayValue?.last?["removed"] == .bool(true))

        // A client behind: mallory's raise then her removal merge into her removal; a later raise of someone else stays.
        let raised = SequencedUpdate(sequence: 5, changes: BoardChanges(board: board, members: [.init(userID: "mallory", total: 99, rank: 1)]))
        let (merged, _) = SubscriberBuffer.coalesce([.update(raised), .update(update)])
        guard case .update(let only)? = merged.first, merged.count == 1 else {
            Issue.record("not merged into one update: \(merged)")
            return
        }
        #expect(only.sequence == 7 && only.changes.members == [.init(userID: "ann", total: 80, rank: 1), .removed("mallory")])
    }

    @Test func removalsAndBansMatchTheirTopicsSchemasAndAnOldReaderRefusesABan() throws {
        let topics = try TopicCatalog.load(directory: GatewayHarness.root.appendingPathComponent("topics"))
        let updates = try #require(try topics.valueSchema(of: TopicNames.leaderboardUpdatesBase))
        let changes = BoardChanges(board: BoardKey.allTime(), members: [.init(userID: "ann", total: 80, rank: 1), .removed("mallory")])
        let message = try KafkaWorkerOutputs.message(for: changes, topic: "t")
        #expect(updates.validate(try JSONValue.parse(message.value)).isEmpty, "\(String(decoding: message.value, as: UTF8.self))")
        #expect(try JSONDecoder().decode(BoardChanges.self, from: Data(message.value)) == changes)
        // A member without the flag is the bytes it always was.
        #expect(!String(decoding: try JSONEncoder().encode(BoardChanges.Member(userID: "a", total: 1, rank: nil)), as: UTF8.self).contains("removed"))
        let notRemoved = try JSONValue.parse(Array(#"{"schemaVersion":2,"board":"b","window":"daily","period":"p","dimension":"global","members":[{"userId":"a","total":0,"removed":false}]}"#.utf8))
        #expect(!updates.validate(notRemoved).isEmpty, "removed is true or absent")

        let events = try #require(try topics.valueSchema(of: TopicNames.scoreEventsBase))
        let ban = UserBanned(userID: "mallory", flagID: "0b5e2c1a-7f7e-4a6e-9f0e-3a1d2c3b4a59", bannedAt: 1_795_000_000_000)
        let banMessage = try KafkaScoreEvents.message(for: ban, topic: "t")
        #expect(events.validate(try JSONValue.parse(banMessage.value)).isEmpty, "\(String(decoding: banMessage.value, as: UTF8.self))")
        #expect(banMessage.key == Array("mallory".utf8), "the user's partition, as their events")
        #expect(try ScoreEventsRecord.decode(Data(banMessage.value)) == .ban(ban))
        // A worker from before bans decodes score events only: the ban fails there, and it dead-letters it.
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(ScoreEvent.self, from: Data(banMessage.value)) }
        // A ban naming no valid user is refused (a dead letter), and a score event is still one.
        let badUser = Data(#"{"schemaVersion":1,"kind":"ban","userId":"a b","flagId":"f","bannedAt":1795000000000}"#.utf8)
        #expect(throws: ScoreboardError.self) { try ScoreEventsRecord.decode(badUser) }
        #expect(!events.validate(try JSONValue.parse(Array(badUser))).isEmpty)
        let mixed = try JSONValue.parse(Array(#"{"schemaVersion":1,"kind":"ban","userId":"a","flagId":"f","bannedAt":1795000000000,"points":5}"#.utf8))
        #expect(events.validate(mixed).contains(JSONSchema.Violation(pointer: "/points", message: "is not allowed")))
    }
}
