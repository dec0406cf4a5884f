import Foundation
import Logging
import NIOCore
import ScoreboardCore
@testable import ScoreboardPush
import Testing

/// The fraud review feed, in process: a snapshot of the open flags first, each published flag with the user's recent
/// events, resumable from an id it gave, a snapshot again when the position is not held.
@Suite(.timeLimit(.minutes(1)))
struct FraudFeedTests {
    static func flag(_ user: String, by trigger: String) -> FraudFlagMessage {
        FraudFlagMessage(
            userID: user, ruleID: "rapid-actions", severity: .high, outcome: .flag, detectedAt: 1_000, triggeredBy: trigger,
            evidence: ["actions": 9, "seconds": 8], detail: "9 actions in 8 s")
    }

    static func event(_ user: String, _ index: Int) -> ScoreEvent {
        ScoreEvent(
            eventID: "00000000-0000-4000-8000-\(String(format: "%012d", index))", userID: user, action: "pvp-win", points: 10,
            occurredAt: Timestamp(millisecondsSinceEpoch: 1_000 + Int64(index)), region: nil, guild: nil,
            idempotencyKey: "00000000-0000-4000-8000-\(String(format: "%012d", index))", source: .player)
    }

    /// The SSE event's name, id and JSON.
    static func parse(_ item: FraudFeed.Item?) throws -> (name: String, id: String?, json: [String: Any]) {
        guard case .event(let buffer)? = item else { throw Unexpected(item: "\(String(describing: item))") }
        var name = "", id: String?, json: [String: Any] = [:]
        for line in String(buffer: buffer).split(separator: "\n") {
            if line.hasPrefix("event: ") { name = String(line.dropFirst(7)) }
            if line.hasPrefix("id: ") { id = String(line.dropFirst(4)) }
            if line.hasPrefix("data: ") { json = try JSONSerialization.jsonObject(with: Data(line.dropFirst(6).utf8)) as? [String: Any] ?? [:] }
        }
        return (name, id, json)
    }

    struct Unexpected: Error { var item: String }

    /// The next event, skipping heartbeats.
    static func next(_ iterator: inout AsyncStream<FraudFeed.Item>.Iterator) async throws -> (name: String, id: String?, json: [String: Any]) {
        while true {
            let item = await iterator.next()
            if case .heartbeat? = item { continue }
            return try parse(item)
        }
    }

    @Test func aSubscriberGetsTheOpenFlagsThenEachFlagWithRecentEventsAndResumes() async throws {
        let reviews = MemoryFraudReviews()
        let old = Self.flag("mallory", by: "old")
        reviews.add(old, events: [Self.event("mallory", 1), Self.event("mallory", 2)])
        reviews.add(Self.flag("trent", by: "t1"), events: [Self.event("trent", 3)])
        let source = MemoryFraudFlagSource()
        var configuration = FraudFeed.Configuration()
        configuration.history = 2
        let feed = FraudFeed(configuration: configuration, source: source, reviews: reviews, logger: Logger(label: "test"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await feed.run() }

            let stream = try await feed.subscribe(since: nil)
            var first = stream.makeAsyncIterator()
            let snapshot = try await Self.next(&first)
            #expect(snapshot.name == "snapshot")
            let flags = snapshot.json["flags"] as? [[String: Any]] ?? []
            #expect(Set(flags.compactMap { $0["flagId"] as? String }).count == 2)
            let mallory = try #require(flags.first { $0["userId"] as? String == "mallory" })
            #expect((mallory["recentEvents"] as? [[String: Any]])?.count == 2, "the user's recent events beside the flag")

            // A flag published: the subscriber gets it, with the user's recent events, and an id to resume from.
            let live = Self.flag("eve", by: "e1")
            reviews.add(live, events: [Self.event("eve", 4)])
            await source.send([PositionedFraudFlag(partition: 1, offset: 7, flag: live)])
            let published = try await Self.next(&first)
            #expect(published.name == "flag" && published.id == "1-7")
            let body = published.json["flag"] as? [String: Any] ?? [:]
            #expect(body["flagId"] as? String == live.flagID && (body["recentEvents"] as? [[String: Any]])?.count == 1)
            #expect((body["evidence"] as? [String: Any])?["actions"] as? Double == 9)

            // Two more flags; a subscriber that resumes from "1-7" gets exactly those two again.
            let more = [Self.flag("eve", by: "e2"), Self.flag("eve", by: "e3")]
            await source.send([PositionedFraudFlag(partition: 1, offset: 8, flag: more[0]), PositionedFraudFlag(partition: 2, offset: 0, flag: more[1])])
            #expect(try await Self.next(&first).id == "1-8")
            #expect(try await Self.next(&first).id == "1-8.2-0")
            var resumed = try await feed.subscribe(since: FraudFeedPosition("1-7")).makeAsyncIterator()
            let again = [try await Self.next(&resumed), try await Self.next(&resumed)]
            #expect(again.map(\.name) == ["flag", "flag"])
            #expect(again.compactMap { ($0.json["flag"] as? [String: Any])?["flagId"] as? String } == more.map(\.flagID))

            // A position no longer held (history 2: the flag at 1-7 is gone): a snapshot instead.
            var stale = try await feed.subscribe(since: FraudFeedPosition("1-6")).makeAsyncIterator()
            #expect(try await Self.next(&stale).name == "snapshot")
            group.cancelAll()
        }
    }

    /// Bad input: a resume id that is not one the feed gives.
    @Test func positionsParseOnlyWhatTheFeedWrites() {
        #expect(FraudFeedPosition("0-12.3-4")?.offsets == [0: 12, 3: 4])
        #expect(FraudFeedPosition("0-12.3-4")?.text == "0-12.3-4")
        for bad in ["", "12", "0-", "-1-2", "0-1.", "a-b", "0-1-2"] { #expect(FraudFeedPosition(bad) == nil, "\(bad)") }
    }
}
