import ScoreboardCore
import ScoreboardHTTP
import Synchronization

// The gateway's ports in memory, with the semantics of the real adapters: a claim is decided and recorded at once,
// records, spent tokens and counters expire by the injected clock as Redis's TTLs do, and the broker hands out
// increasing offsets. Each can fail on cue (Redis or the broker down), so a fault test runs in milliseconds beside
// the real-server one.

/// An error every call throws while it is set: the port is "down".
final class Outage: Sendable {
    private let error = Mutex<(any Error)?>(nil)

    func set(_ error: (any Error)?) { self.error.withLock { $0 = error } }

    func throwIfDown() throws {
        if let error = error.withLock({ $0 }) { throw error }
    }
}

/// The ingest state in memory.
public final class MemoryIngestState: IngestState, Sendable {
    struct State {
        var bans: Set<String> = []
        /// Users with an open fraud flag (Redis: ``RedisFraudMarks``).
        var flagged: Set<String> = []
        var records: [String: (record: IdempotencyRecord, expiresAt: Timestamp)] = [:]
        var spentTokens: [String: Timestamp] = [:]
        /// Sliding windows: request times and ids, oldest first.
        var windows: [RateLimit.Scope: [(time: Int64, member: String)]] = [:]
        /// Calendar counters and when each resets.
        var counters: [RateLimit.Scope: (count: Int, resetAt: Timestamp)] = [:]
    }

    private let state = Mutex(State())
    private let outage = Outage()
    private let clock: @Sendable () -> Timestamp
    /// How long a 202 answer is kept under its key (as ``RedisIngestState``).
    public let answerLifetime: Duration = .seconds(86_400)

    public init(clock: @escaping @Sendable () -> Timestamp = { Timestamp.now() }) {
        self.clock = clock
    }

    /// Every call throws `error` until this is called again with `nil`.
    public func fail(with error: (any Error)?) { outage.set(error) }

    /// The next `count` calls of ``complete(_:)`` throw (a store that times out while storing answers).
    public func failNextCompletes(_ count: Int) { completeFailures.withLock { $0 = count } }
    private let completeFailures = Mutex(0)

    /// What the key holds now, for tests.
    public func record(userID: String, idempotencyKey: String) -> IdempotencyRecord? {
        let now = clock()
        return state.withLock { $0.records[Self.key(userID, idempotencyKey)].flatMap { $0.expiresAt > now ? $0.record : nil } }
    }

    /// Marks the user as having an open fraud flag (or none), as the fraud stage and the review do in Redis.
    public func setFlagged(userID: String, flagged: Bool) {
        state.withLock { state in
            if flagged { state.flagged.insert(userID) } else { state.flagged.remove(userID) }
        }
    }

    /// Whether the nonce is spent now, for tests.
    public func isSpent(nonce: String) -> Bool {
        let now = clock()
        return state.withLock { ($0.spentTokens[nonce].map { $0 > now }) ?? false }
    }

    public func precheck(_ keys: [IngestKey]) async throws -> [IngestPrecheck] {
        try outage.throwIfDown()
        let now = clock()
        return state.withLock { state in
            keys.map { key in
                let stored = state.records[Self.key(key.userID, key.idempotencyKey)]
                return IngestPrecheck(
                    banned: state.bans.contains(key.userID), record: stored.flatMap { $0.expiresAt > now ? $0.record : nil },
                    flagged: state.flagged.contains(key.userID))
            }
        }
    }

    public func admit(_ claims: [IngestClaim]) async throws -> [Result<IngestAdmission, any Error>] {
        try outage.throwIfDown()
        let clockNow = clock()
        // One after another under one lock, as the Redis script decides a chunk: a claim sees the ones before it.
        return state.withLock { state in claims.map { .success(Self.decide($0, clockNow: clockNow, &state)) } }
    }

    private static func decide(_ claim: IngestClaim, clockNow: Timestamp, _ state: inout State) -> IngestAdmission {
        let now = claim.now.millisecondsSinceEpoch
        // The order of RedisIngestState's script: a replayed token first, then the limits, then the key.
        if let nonce = claim.tokenNonce, let until = state.spentTokens[nonce], until > clockNow { return .tokenReplayed }
        var worst: Int64 = 0
        var which: String?
        for limit in claim.limits {
            switch limit.window {
            case .sliding(let length):
                var entries = state.windows[limit.scope, default: []]
                entries.removeAll { $0.time <= now - length }
                state.windows[limit.scope] = entries
                if entries.count >= limit.count, let oldest = entries.map(\.time).min() {
                    let wait = oldest + length - now
                    if wait > worst { (worst, which) = (wait, limit.name) }
                }
            case .calendar(let resetAt):
                let used = state.counters[limit.scope].flatMap { $0.resetAt > clockNow ? $0.count : nil } ?? 0
                if used >= limit.count {
                    let wait = resetAt.millisecondsSinceEpoch - now
                    if wait > worst { (worst, which) = (wait, limit.name) }
                }
            }
        }
        if let which { return .rateLimited(limit: which, retryAfterMilliseconds: max(worst, 1)) }
        let key = Self.key(claim.userID, claim.idempotencyKey)
        if let existing = state.records[key], existing.expiresAt > clockNow { return .idempotencyKeyInUse }
        if let nonce = claim.tokenNonce { state.spentTokens[nonce] = clockNow.adding(claim.tokenMemory) }
        state.records[key] = (IdempotencyRecord(fingerprint: claim.fingerprint, answer: nil), clockNow.adding(claim.pendingLifetime))
        for limit in claim.limits {
            switch limit.window {
            case .sliding: state.windows[limit.scope, default: []].append((now, claim.requestID))
            case .calendar(let resetAt):
                let used = state.counters[limit.scope].flatMap { $0.resetAt > clockNow ? $0.count : nil } ?? 0
                state.counters[limit.scope] = (used + 1, resetAt)
            }
        }
        return .admitted
    }

    public func checkMint(userID: String, limit: RateLimit, requestID: String, now: Timestamp) async throws -> MintAdmission {
        try outage.throwIfDown()
        // As the Redis adapter: a mint limit is a sliding window, anything else a caller's bug.
        guard case .sliding(let length) = limit.window else { throw MemoryPortMisuse(reason: "mint limits are sliding windows") }
        let now = now.millisecondsSinceEpoch
        return state.withLock { state in
            if state.bans.contains(userID) { return .banned }
            var entries = state.windows[limit.scope, default: []]
            entries.removeAll { $0.time <= now - length }
            if entries.count >= limit.count, let oldest = entries.map(\.time).min() {
                state.windows[limit.scope] = entries
                return .rateLimited(retryAfterMilliseconds: max(oldest + length - now, 1))
            }
            entries.append((now, requestID))
            state.windows[limit.scope] = entries
            return .allowed
        }
    }

    public func complete(_ completions: [IngestCompletion]) async throws {
        try outage.throwIfDown()
        let failing = completeFailures.withLock { count in
            defer { count = max(0, count - 1) }
            return count > 0
        }
        if failing { throw MemoryStoreFailure() }
        let expiresAt = clock().adding(answerLifetime)
        state.withLock { state in
            for completion in completions {
                state.records[Self.key(completion.key.userID, completion.key.idempotencyKey)] = (completion.record, expiresAt)
            }
        }
    }

    public func release(_ releases: [IngestRelease]) async throws {
        try outage.throwIfDown()
        state.withLock { state in
            for release in releases {
                state.records[Self.key(release.key.userID, release.key.idempotencyKey)] = nil
                if let nonce = release.tokenNonce { state.spentTokens[nonce] = nil }
            }
        }
    }

    public func setBan(userID: String, banned: Bool) async throws {
        try outage.throwIfDown()
        state.withLock { state in
            if banned { state.bans.insert(userID) } else { state.bans.remove(userID) }
        }
    }

    /// The memory store knows no review: every ban in it can be lifted.
    public func liftBan(userID: String) async throws -> Bool {
        try await setBan(userID: userID, banned: false)
        return true
    }

    public func probe() async throws {
        try outage.throwIfDown()
    }

    static func key(_ userID: String, _ idempotencyKey: String) -> String { userID + "\n" + idempotencyKey }
}

/// A broker in memory: acknowledges with increasing offsets (one partition per user, by a stable hash), refuses, or
/// holds every event unacknowledged until told, on cue.
public final class MemoryScoreEventPublisher: ScoreEventPublishing, Sendable {
    public enum Mode: Sendable {
        case acknowledge
        /// Every event is refused with this error (a broker that answers with failures).
        case refuse(any Error)
        /// Nothing is acknowledged until ``settleHeld(acknowledging:)`` (a broker that does not answer).
        case hold
    }

    private struct State {
        var mode: Mode = .acknowledge
        var published: [ScoreEvent] = []
        var offsets: [Int32: Int64] = [:]
        var held: [(events: [ScoreEvent], continuation: CheckedContinuation<[Result<EventPosition, any Error>], Never>)] = []
    }

    private let state = Mutex(State())
    public let partitions: Int32

    public init(partitions: Int32 = 8) {
        self.partitions = partitions
    }

    public var mode: Mode {
        get { state.withLock { $0.mode } }
        set { state.withLock { $0.mode = newValue } }
    }

    /// Every acknowledged event, in order.
    public var published: [ScoreEvent] { state.withLock { $0.published } }

    public var unacknowledgedCount: Int { state.withLock { $0.held.reduce(0) { $0 + $1.events.count } } }

    public func publish(_ events: [ScoreEvent]) async -> [Result<EventPosition, any Error>] {
        let partitions = partitions
        return await withCheckedContinuation { continuation in
            let answer: [Result<EventPosition, any Error>]? = state.withLock { state in
                switch state.mode {
                case .acknowledge: return Self.acknowledge(events, partitions: partitions, &state)
                case .refuse(let error): return events.map { _ in .failure(error) }
                case .hold:
                    state.held.append((events, continuation))
                    return nil
                }
            }
            if let answer { continuation.resume(returning: answer) }
        }
    }

    /// Answers every held publish: acknowledged (delivered late), or refused with `error`.
    public func settleHeld(acknowledging: Bool, error: any Error = MemoryBrokerRefusal()) {
        let partitions = partitions
        let answers = state.withLock { state in
            defer { state.held = [] }
            return state.held.map { held in
                (held.continuation, acknowledging ? Self.acknowledge(held.events, partitions: partitions, &state) : held.events.map { _ in .failure(error) })
            }
        }
        // Resumed outside the lock.
        for (continuation, answer) in answers { continuation.resume(returning: answer) }
    }

    private static func acknowledge(_ events: [ScoreEvent], partitions: Int32, _ state: inout State) -> [Result<EventPosition, any Error>] {
        events.map { event in
            let partition = Int32(event.partitionKey.utf8.reduce(UInt32(2_166_136_261)) { ($0 ^ UInt32($1)) &* 16_777_619 } % UInt32(partitions))
            let offset = state.offsets[partition, default: 0]
            state.offsets[partition] = offset + 1
            state.published.append(event)
            return .success(EventPosition(partition: partition, offset: offset))
        }
    }
}

/// A call no real adapter would accept either.
public struct MemoryPortMisuse: Error {
    public var reason: String
}

/// What ``MemoryScoreEventPublisher`` refuses held events with by default.
public struct MemoryBrokerRefusal: Error {
    public init() {}
}

/// The rejections topic in memory.
public final class MemoryRejectionPublisher: RejectionPublishing, Sendable {
    private let published = Mutex<[Rejection]>([])
    private let outage = Outage()

    public init() {}

    public var rejections: [Rejection] { published.withLock { $0 } }

    /// Every publish throws `error` until this is called again with `nil`.
    public func fail(with error: (any Error)?) { outage.set(error) }

    public func publish(_ rejection: Rejection) async throws {
        try outage.throwIfDown()
        published.withLock { $0.append(rejection) }
    }
}

extension GatewayPorts {
    /// Memory ports on one clock, for tests and local runs without servers.
    public static func memory(clock: @escaping @Sendable () -> Timestamp = { Timestamp.now() }) -> GatewayPorts {
        GatewayPorts(
            scoreEvents: MemoryScoreEventPublisher(), rejections: MemoryRejectionPublisher(), state: MemoryIngestState(clock: clock),
            revocations: MemoryTokenRevocations(clock: clock))
    }
}

extension Timestamp {
    func adding(_ duration: Duration) -> Timestamp {
        let (seconds, attoseconds) = duration.components
        return Timestamp(millisecondsSinceEpoch: millisecondsSinceEpoch + seconds * 1000 + attoseconds / 1_000_000_000_000_000)
    }
}

/// What a memory port throws when told to fail once.
public struct MemoryStoreFailure: Error, CustomStringConvertible {
    public init() {}
    public var description: String { "the memory store failed on cue" }
}
