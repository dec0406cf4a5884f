import ScoreboardCore
import Synchronization

/// The fraud stage's outputs in memory, with the real adapter's semantics (``FraudFlagOutputs``): every publish is
/// kept in order (a flag published again after a crash appears twice, as it would on the topic), and a flag is marked
/// open only the first time its id is seen.
public final class MemoryFraudFlagOutputs: FraudFlagOutputs, Sendable {
    private let state = Mutex<(published: [FraudFlagMessage], statuses: [String: Bool])>(([], [:]))
    private let failures = FailureSchedule()

    public init() {}

    /// Every flag published, in order, repeats included.
    public var published: [FraudFlagMessage] { state.withLock { $0.published } }

    /// The users with an open flag.
    public var flaggedUsers: Set<String> {
        state.withLock { state in Set(state.published.filter { state.statuses[$0.flagID] == true }.map(\.userID)) }
    }

    /// The next `count` publishes throw `error` (as a broker that does not acknowledge).
    public func failNextPublishes(_ count: Int, with error: any Error) { failures.add(count, error) }

    public func publishFlags(_ flags: [FraudFlagMessage]) async throws {
        try failures.throwIfScheduled()
        state.withLock { state in
            for flag in flags where state.statuses[flag.flagID] == nil { state.statuses[flag.flagID] = true }
            state.published += flags
        }
    }

    /// A reviewer closed the flag.
    public func close(flagID: String) {
        state.withLock { $0.statuses[flagID] = false }
    }
}
