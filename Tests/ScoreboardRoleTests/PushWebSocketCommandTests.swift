import Foundation
import Hummingbird
import NIOCore
import ScoreboardCore
import ScoreboardHTTP
@testable import ScoreboardPush
import Testing

/// The WebSocket commands in process (no socket): what a subscribe queues, and the error each bad command gets.
struct PushWebSocketCommandTests {
    static let upgrade = Request(
        head: .init(method: .get, scheme: "http", authority: "localhost", path: "/v1/streams/ws"), body: .init(buffer: ByteBuffer()))

    func command(_ world: PushWorld, _ text: String, buffer: SubscriberBuffer, session: WebSocketSession = WebSocketSession()) async -> String? {
        await world.parts.gateway.handleCommand(text, buffer: buffer, request: Self.upgrade, session: session)
    }

    /// The `problem` of an error message.
    static func problem(_ message: String?) -> String? {
        guard let data = message?.data(using: .utf8) else { return nil }
        return (try? JSONDecoder().decode([String: String].self, from: data))?["problem"]
    }

    @Test func aSubscribeWithSinceQueuesTheMissedUpdates() async throws {
        let world = PushWorld()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await world.feed.run() }
            await world.updates.send(.assigned([0]))
            await world.updates.publish((0..<4).map { sequenced($0) })
            let buffer = SubscriberBuffer(limit: 100)
            #expect(await command(world, #"{"type":"subscribe","board":"all-time:global","since":1}"#, buffer: buffer) == nil)
            #expect(buffer.takeNow() == .items([.update(sequenced(2)), .update(sequenced(3))]))
            // Live updates follow.
            await world.updates.publish([sequenced(4)])
            #expect(buffer.takeNow() == .items([.update(sequenced(4))]))
            group.cancelAll()
        }
    }

    /// Bad input: commands that are not JSON, boards that are not declared or not written like one, a personal
    /// subscribe without a token, and one board more than a connection may follow.
    @Test func badCommandsGetAnErrorMessageEach() async throws {
        let onlyGlobal = LeaderboardCatalog(topN: 10, closedPeriodRetention: [:], boards: [BoardDefinition(window: .allTime, dimension: .global)])
        let world = PushWorld(boards: onlyGlobal)
        let buffer = SubscriberBuffer(limit: 100)
        let cases: [(command: String, problem: Problem.Kind)] = [
            ("not json", .invalidBody),
            (#"{"type":"dance"}"#, .invalidBody),
            (#"{"type":"subscribe","board":"daily:global"}"#, .notFound),
            (#"{"type":"subscribe","board":"all-time:planet"}"#, .invalidParameter),
            (#"{"type":"subscribe","personal":true}"#, .unauthenticated),
        ]
        for (text, problem) in cases {
            let answer = await command(world, text, buffer: buffer)
            #expect(Self.problem(answer) == problem.uri, "\(text): \(answer ?? "no error")")
        }
        #expect(world.feed.streamCount(of: buffer) == 0)
    }

    @Test func aConnectionFollowsAtMostItsShareOfBoards() async throws {
        let world = PushWorld()
        let buffer = SubscriberBuffer(limit: 1_000)
        let cap = PushGateway.Configuration().maxSubscriptionsPerConnection
        for index in 0..<cap {
            #expect(await command(world, #"{"type":"subscribe","board":"all-time:guild:g\#(index)"}"#, buffer: buffer) == nil)
        }
        let refused = await command(world, #"{"type":"subscribe","board":"all-time:guild:one-more"}"#, buffer: buffer)
        #expect(Self.problem(refused) == Problem.Kind.tooManySubscriptions.uri)
        #expect(world.feed.streamCount(of: buffer) == cap)
        // Unsubscribing from everything frees them all.
        #expect(await command(world, #"{"type":"unsubscribe"}"#, buffer: buffer) == nil)
        #expect(world.feed.streamCount(of: buffer) == 0)
    }
}
