import ScoreboardCore
import Synchronization

/// The achievement stage's announcements in memory, with the topic's semantics (``AchievementNotifications``): every
/// publish is kept in order, so an unlock published again after a crash appears twice, as it would on the topic.
public final class MemoryAchievementNotifications: AchievementNotifications, Sendable {
    private let state = Mutex<[AchievementUnlock]>([])
    private let failures = FailureSchedule()

    public init() {}

    /// Every unlock published, in order, repeats included.
    public var published: [AchievementUnlock] { state.withLock { $0 } }

    /// The next `count` publishes throw `error` (as a broker that does not acknowledge).
    public func failNextPublishes(_ count: Int, with error: any Error) { failures.add(count, error) }

    public func publishUnlocks(_ unlocks: [AchievementUnlock]) async throws {
        try failures.throwIfScheduled()
        state.withLock { $0 += unlocks }
    }
}
