import Foundation
import Logging
import NIOCore
import ScoreboardCore
@testable import ScoreboardPush
import Testing

/// Achievements on the personal channel, in process: the push role's feed hands each announced unlock to the
/// personal channels of its user only, as an `achievement` frame carrying the unlock's record id.
@Suite(.timeLimit(.minutes(1)))
struct AchievementFeedTests {
    static func unlock(_ user: String, _ achievement: String = "beginner") -> AchievementNotification {
        AchievementNotification(AchievementUnlock(
            userID: user, achievementID: achievement, kind: .score, unlockedAt: Timestamp(millisecondsSinceEpoch: 1_764_000_000_000),
            triggeredBy: "00000000-0000-4000-8000-000000000001"))
    }

    /// An unlock of alice reaches alice's personal channels (two connections), not bob's, and not a board stream's;
    /// announced twice (a worker recovered its outbox), it arrives twice under the same id, for the client to drop.
    @Test func anUnlockReachesItsUsersPersonalChannelsOnly() async throws {
        let world = PushWorld()
        let source = MemoryNotificationSource()
        let feed = AchievementFeed(source: source, feed: world.feed, logger: Logger(label: "test"))
        let alice = SubscriberBuffer(limit: 10), aliceAgain = SubscriberBuffer(limit: 10), bob = SubscriberBuffer(limit: 10)
        let watcher = SubscriberBuffer(limit: 10)
        world.feed.subscribe(alice, toUser: "alice")
        world.feed.subscribe(aliceAgain, toUser: "alice")
        world.feed.subscribe(bob, toUser: "bob")
        _ = world.feed.subscribe(watcher, to: BoardStream(window: .allTime, dimension: .global, value: nil), since: nil)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await feed.run() }
            let announced = Self.unlock("alice")
            await source.send([announced])
            for buffer in [alice, aliceAgain] {
                guard case .items(let items)? = buffer.takeNow(), case .achievement(let frame)? = items.first, items.count == 1 else {
                    Issue.record("expected one achievement frame")
                    continue
                }
                #expect(frame.notification == announced)
            }
            #expect(bob.takeNow() == nil)
            #expect(watcher.takeNow() == nil)

            await source.send([announced])
            guard case .items(let again)? = alice.takeNow(), case .achievement(let repeated)? = again.first else {
                Issue.record("the repeat was not delivered")
                return
            }
            #expect(repeated.notification.id == "alice:beginner")
            group.cancelAll()
        }
    }

    /// The frame on both transports: an SSE `achievement` event without an `id:` line (a board stream's Last-Event-ID
    /// stays a board sequence), whose data is the WebSocket message: `{"id","type":"achievement","unlock"}`.
    @Test func theFrameCarriesTheRecordIDOnBothTransports() throws {
        let frame = AchievementFrame(Self.unlock("alice", "daily-top-10"))
        let sse = String(buffer: PushGateway.sseEvent(.achievement(frame)))
        #expect(sse.hasPrefix("event: achievement\ndata: {") && sse.hasSuffix("}\n\n"))
        #expect(!sse.contains("\nid: ") && !sse.hasPrefix("id: "))
        let message = String(buffer: PushGateway.jsonBytes(.achievement(frame)))
        #expect(sse == "event: achievement\ndata: \(message)\n\n")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(message.utf8)) as? [String: Any])
        #expect(json["type"] as? String == "achievement" && json["id"] as? String == "alice:daily-top-10")
        let unlock = try #require(json["unlock"] as? [String: Any])
        #expect(unlock["achievement"] as? String == "daily-top-10" && unlock["userId"] as? String == "alice" && unlock["kind"] as? String == "score")
    }

    /// An achievement queued between a board's updates is sent after them in the same drain (it has no sequence),
    /// and coalescing a long queue keeps it.
    @Test func anAchievementFollowsTheBoardItemsDrainedWithIt() {
        let frame = AchievementFrame(Self.unlock("u"))
        let buffer = SubscriberBuffer(limit: 1_000, coalesceThreshold: 2)
        buffer.append([.update(sequenced(1)), .achievement(frame), .update(sequenced(2)), .update(sequenced(3))])
        guard case .items(let items)? = buffer.takeNow() else {
            Issue.record("nothing pending")
            return
        }
        #expect(items.count == 2)
        #expect(items.last == .achievement(frame))
    }
}
