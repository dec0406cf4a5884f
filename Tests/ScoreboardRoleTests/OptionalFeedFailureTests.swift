import Foundation
import Logging
import ScoreboardCore
@testable import ScoreboardPush
import Testing

/// The achievements and fraud-flags feeds are part of the push role's readiness only until they hold their
/// partitions: a feed whose topic cannot be read (a consumer error, a topic not created yet) stops, is logged and
/// counted, and must not keep every board stream of the process out of the load balancer for the life of the process.
@Suite(.timeLimit(.minutes(1)))
struct OptionalFeedFailureTests {
    struct Unreadable: Error {}

    /// Fails at once, as a consumer does whose topic does not exist.
    struct FailingNotificationSource: NotificationSource {
        func run(_ handle: @escaping @Sendable (NotificationSourceEvent) -> Void) async throws { throw Unreadable() }
    }

    struct FailingFraudFlagSource: FraudFlagSource {
        func run(_ handle: @escaping @Sendable ([PositionedFraudFlag]) -> Void) async throws { throw Unreadable() }
        func run(onAssigned: @escaping @Sendable () -> Void, _ handle: @escaping @Sendable ([PositionedFraudFlag]) -> Void) async throws {
            throw Unreadable()
        }
    }

    /// Not ready before it runs; ready within 10 s of running, although its source failed at once.
    static func expectReadyAfterItsSourceFails(isReady: @escaping @Sendable () -> Bool, run: @escaping @Sendable () async throws -> Void) async throws {
        #expect(!isReady(), "not ready before it ran")
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await run() }
            let deadline = ContinuousClock.now + .seconds(10)
            while !isReady(), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
            #expect(isReady())
            group.cancelAll()
        }
    }

    @Test func aNotificationsFeedThatCannotReadItsTopicDoesNotHoldReadinessBack() async throws {
        let feed = AchievementFeed(source: FailingNotificationSource(), feed: PushWorld().feed, logger: Logger(label: "test"))
        try await Self.expectReadyAfterItsSourceFails(isReady: { feed.isReady }, run: { try await feed.run() })
    }

    @Test func aFraudFeedThatCannotReadItsTopicDoesNotHoldReadinessBack() async throws {
        let feed = FraudFeed(configuration: .init(), source: FailingFraudFlagSource(), reviews: MemoryFraudReviews(), logger: Logger(label: "test"))
        try await Self.expectReadyAfterItsSourceFails(isReady: { feed.isReady }, run: { try await feed.run() })
    }
}
