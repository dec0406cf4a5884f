import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import ScoreboardCore
@testable import ScoreboardPush
import Testing

/// Streams in process, fed by the memory updates log: resuming from the history, snapshots, new epochs.
struct PushStreamTests {
    static let globalStream = BoardStream(window: .allTime, dimension: .global, value: nil)
    static let lastEventID = HTTPField.Name("Last-Event-ID")!

    @Test func sseResumesFromTheHistoryBySequence() async throws {
        let world = PushWorld()
        try await world.withClient { client in
            await world.updates.send(.assigned([0]))
            await world.updates.publish((0..<5).map { sequenced($0) })
            async let response = client.execute(uri: "/v1/streams/sse/all-time/global", method: .get, headers: [Self.lastEventID: "2"])
            await world.streamsOpen(1)
            world.openStreams.endAll()
            let events = sseEvents(try await response.body)
            // Exactly the updates after 2, no snapshot, then the server's end.
            #expect(events.map(\.event) == ["update", "update", "end"])
            #expect(events.compactMap(\.id) == [3, 4])
        }
    }

    /// Bad input: a sequence the history no longer holds (trimmed), and one before anything the feed read.
    @Test func aClientBehindTheHistoryGetsASnapshot() async throws {
        var feed = UpdateFeed.Configuration()
        feed.historyPerStream = 10
        let world = PushWorld(feed: feed)
        world.live.setScores(["u": 29], on: .allTime())
        try await world.withClient { client in
            await world.updates.send(.assigned([0]))
            await world.updates.publish((0..<30).map { sequenced($0) })
            async let response = client.execute(uri: "/v1/streams/sse/all-time/global?since=2", method: .get)
            await world.streamsOpen(1)
            world.openStreams.endAll()
            let body = try await response.body
            let events = sseEvents(body)
            // The snapshot is labelled with the stream's latest sequence, so the client resumes after it.
            #expect(events.map(\.event) == ["snapshot", "end"])
            #expect(events.first?.id == 29)
            #expect(String(buffer: body).contains(#""userId":"u""#))
        }
    }

    /// A rolling deploy has workers publishing both schema versions: one message is one sequence, whichever. A client
    /// resuming after sequence 1 gets every member change after it (the version 2 message's two members, then the
    /// version 1 message's one) and none of 0 or 1 again.
    @Test func resumingAfterASequenceGivesEveryMemberChangeAfterItOnce() async throws {
        let world = PushWorld()
        @Sendable func changes(_ sequence: Int64, _ members: [(String, Int64)]) -> SequencedUpdate {
            SequencedUpdate(sequence: sequence, changes: BoardChanges(board: .allTime(), members: members.map { .init(userID: $0.0, total: $0.1, rank: nil) }))
        }
        try await world.withClient { client in
            await world.updates.send(.assigned([0]))
            await world.updates.publish([sequenced(0, user: "a", total: 1), changes(1, [("a", 2), ("b", 1)]), changes(2, [("b", 3), ("c", 1)])])
            await world.updates.publish([sequenced(3, user: "c", total: 4)])
            async let response = client.execute(uri: "/v1/streams/sse/all-time/global", method: .get, headers: [Self.lastEventID: "1"])
            await world.streamsOpen(1)
            world.openStreams.endAll()
            let frames = StreamFrames.parse(sse: try await response.body)
            #expect(frames.map(\.id) == [2, 3])
            #expect(frames.map(\.memberTotals) == [["b": 3, "c": 1], ["c": 4]])
        }
    }

    /// The issue's test: coalesced updates (one message per board per worker batch, several members each) leave
    /// subscribers with the same final boards as the query API: a subscriber there from the start (the whole board),
    /// one that joins midway (a snapshot of the top N, then updates) and a slow one whose drain merges everything it
    /// missed into one update (the top N; it joined with a snapshot too).
    @Test func coalescedUpdatesLeaveSubscribersWithTheSameFinalBoardsAsTheQueryAPI() async throws {
        let world = PushWorld()
        let board = BoardKey.allTime()
        try await world.withClient { client in
            await world.updates.send(.assigned([0]))
            async let fromTheStart = client.execute(uri: "/v1/streams/sse/all-time/global", method: .get)
            await world.streamsOpen(1)
            let slow = SubscriberBuffer(limit: 10_000, coalesceThreshold: 1)
            var totals: [String: Int64] = [:]
            var random = SplitMix64(state: 42)
            for batch in Int64(0)..<60 {
                // One worker batch: 30 events of 40 players, each changed member once with its new total.
                var changed: [String: Int64] = [:]
                for _ in 0..<30 {
                    let player = "p\(random.next() % 40)"
                    totals[player, default: 0] += Int64(random.next() % 50) + 1
                    changed[player] = totals[player]
                }
                world.live.setScores(changed, on: board)
                let members = changed.sorted { $0.key < $1.key }.map { BoardChanges.Member(userID: $0.key, total: $0.value, rank: nil) }
                await world.updates.publish([SequencedUpdate(sequence: batch, changes: BoardChanges(board: board, members: members))])
                if batch == 20 { try await world.parts.gateway.start(Self.globalStream, since: nil, buffer: slow) }
            }
            async let midway = client.execute(uri: "/v1/streams/sse/all-time/global", method: .get)
            await world.streamsOpen(2)
            for batch in Int64(60)..<80 {
                let player = "p\(batch % 7)"
                totals[player, default: 0] += 3
                world.live.setScores([player: totals[player]!], on: board)
                await world.updates.publish([SequencedUpdate(sequence: batch, changes: BoardChanges(board: board, members: [.init(userID: player, total: totals[player]!, rank: nil)]))])
            }
            world.openStreams.endAll()

            let query = try await client.execute(uri: "/v1/leaderboards/all-time/global?limit=100", method: .get) { try JSONDecoder().decode(BoardPage.self, from: Data(String(buffer: $0.body).utf8)) }
            let queried = Dictionary(uniqueKeysWithValues: query.entries.map { ($0.userID, $0.score) })
            #expect(queried == totals)
            let topN = StreamFrames.top(10, of: queried)
            #expect(StreamFrames.apply(StreamFrames.parse(sse: try await fromTheStart.body)) == queried)
            #expect(StreamFrames.top(10, of: StreamFrames.apply(StreamFrames.parse(sse: try await midway.body))) == topN)
            guard case .items(let missed) = slow.takeNow() else { Issue.record("the slow subscriber got nothing"); return }
            #expect(missed.count == 2, "a snapshot, then every missed update merged into one")
            #expect(StreamFrames.top(10, of: StreamFrames.apply(missed.map { StreamFrames.parse(json: PushGateway.json($0)) })) == topN)
        }
    }

    @Test func aMalformedLastEventIDIs400() async throws {
        let world = PushWorld()
        try await world.withClient { client in
            try await client.execute(uri: "/v1/streams/sse/all-time/global", method: .get, headers: [Self.lastEventID: "abc"]) { response in
                #expect(response.status == .badRequest)
            }
        }
    }

    /// The log is a new incarnation (a broker that kept it in memory restarted): offsets start again from 0. Open
    /// streams are dropped (the client reconnects with its last sequence), and a sequence read from the old log is not
    /// resumed from in the new one. Before, the feed resumed old sequence 9 in the new log with 10...19, so the client
    /// missed the new log's 0...9; and open streams kept their old-log updates, which outrank the new ones.
    @Test func aNewIncarnationOfTheLogBeginsANewEpoch() async throws {
        let world = PushWorld()
        try await world.withClient { client in
            await world.updates.send(.assigned([0]))
            await world.updates.publish((0..<10).map { sequenced($0) })
            async let response = client.execute(uri: "/v1/streams/sse/all-time/global", method: .get, headers: [Self.lastEventID: "5"])
            await world.streamsOpen(1)
            await world.updates.send(.newIncarnation)
            let events = sseEvents(try await response.body)
            #expect(events.last?.event == "overflow")
            #expect(events.compactMap(\.id).allSatisfy { (6...9).contains($0) })
            #expect(world.feed.epoch == 1)

            let newLog = (0..<20).map { sequenced($0, total: 100 + $0) }
            await world.updates.publish(newLog)
            #expect(world.feed.subscribe(SubscriberBuffer(limit: 100), to: Self.globalStream, since: 9) == .snapshot(sequence: 19))
            #expect(world.feed.subscribe(SubscriberBuffer(limit: 100), to: Self.globalStream, since: 15) == .resume(Array(newLog[16...])))
        }
    }

    @Test func readinessWaitsForTheUpdatesLog() async throws {
        let world = PushWorld()
        try await world.withClient { client in
            try await client.execute(uri: "/health/ready", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                #expect(String(buffer: response.body).contains("kafka"))
            }
            await world.updates.send(.assigned([0, 1]))
            try await client.execute(uri: "/health/ready", method: .get) { response in
                #expect(response.status == .ok)
            }
        }
    }
}

/// Stream frames as a client reads them, and a client's board built by applying them: a snapshot's entries, then
/// each update's members, every total absolute.
enum StreamFrames {
    struct Frame {
        var type: String
        var id: Int64?
        /// A snapshot's entries or an update's members: member → total.
        var memberTotals: [String: Int64]
    }

    static func parse(json: String) -> Frame {
        let object = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any] ?? [:]
        let type = object["type"] as? String ?? ""
        var totals: [String: Int64] = [:]
        if type == "snapshot", let entries = (object["page"] as? [String: Any])?["entries"] as? [[String: Any]] {
            for entry in entries { totals[entry["userId"] as? String ?? ""] = (entry["score"] as? NSNumber)?.int64Value }
        }
        if type == "update", let members = (object["update"] as? [String: Any])?["members"] as? [[String: Any]] {
            for member in members { totals[member["userId"] as? String ?? ""] = (member["total"] as? NSNumber)?.int64Value }
        }
        return Frame(type: type, id: (object["sequence"] as? NSNumber)?.int64Value, memberTotals: totals)
    }

    /// The `snapshot` and `update` events of an SSE body.
    static func parse(sse body: ByteBuffer) -> [Frame] {
        String(buffer: body).components(separatedBy: "\n\n").compactMap { block in
            guard let data = block.split(separator: "\n").first(where: { $0.hasPrefix("data: ") }) else { return nil }
            let frame = parse(json: String(data.dropFirst(6)))
            return frame.type == "snapshot" || frame.type == "update" ? frame : nil
        }
    }

    /// The board a client holds after applying `frames` in order.
    static func apply(_ frames: [Frame]) -> [String: Int64] {
        var board: [String: Int64] = [:]
        for frame in frames { board.merge(frame.memberTotals) { _, new in new } }
        return board
    }

    /// The first `count` of `board` in the query API's order (score, then member, descending).
    static func top(_ count: Int, of board: [String: Int64]) -> [String] {
        Array(board.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key > $1.key }.prefix(count).map { "\($0.key)=\($0.value)" })
    }
}

