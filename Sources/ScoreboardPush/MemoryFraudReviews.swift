import ScoreboardCore
import ServiceLifecycle
import Synchronization

/// Fraud review in memory, with the semantics of the PostgreSQL and Redis adapter: one review per flag, an audit
/// entry per review, confirm bans and takes the user off the boards, dismiss closes. It can fail on cue (the store
/// down), so the routes' tests run without servers.
public final class MemoryFraudReviews: FraudReviews, Sendable {
    public struct State: Sendable {
        public var flags: [String: FraudFlagMessage] = [:]
        public var reviews: [String: FraudReview] = [:]
        public var audit: [FraudAuditEntry] = []
        public var banned: Set<String> = []
        public var events: [String: [ScoreEvent]] = [:]
    }

    private let state = Mutex(State())
    private let failure = Mutex<(any Error)?>(nil)

    public init(flags: [FraudFlagMessage] = []) {
        state.withLock { state in for flag in flags { state.flags[flag.flagID] = flag } }
    }

    public var snapshot: State { state.withLock { $0 } }

    /// Every call throws `error` until this is called again with `nil`.
    public func fail(with error: (any Error)?) { failure.withLock { $0 = error } }

    public func add(_ flag: FraudFlagMessage, events: [ScoreEvent] = []) {
        state.withLock { state in
            state.flags[flag.flagID] = flag
            state.events[flag.userID, default: []] += events
        }
    }

    private func throwIfDown() throws {
        if let error = failure.withLock({ $0 }) { throw error }
    }

    public func flags(_ query: FraudFlagQuery) async throws -> [ReviewedFraudFlag] {
        try throwIfDown()
        return state.withLock { state in
            state.flags.values.map { ReviewedFraudFlag(flag: $0, review: state.reviews[$0.flagID]) }
                .filter { reviewed in
                    let flag = reviewed.flag
                    return (query.status.map { $0 == reviewed.status } ?? true) && (query.rule.map { $0 == flag.ruleID } ?? true)
                        && (query.userID.map { $0 == flag.userID } ?? true) && (query.from.map { flag.detectedAt >= $0 } ?? true)
                        && (query.to.map { flag.detectedAt < $0 } ?? true)
                        && (query.after.map { (flag.detectedAt, flag.flagID) > ($0.detectedAt, $0.flagID) } ?? true)
                }
                .sorted { ($0.flag.detectedAt, $0.flag.flagID) < ($1.flag.detectedAt, $1.flag.flagID) }
                .prefix(query.limit).map { $0 }
        }
    }

    public func review(flagID: String, decision: FraudReviewDecision, note: String, reviewer: String, at: Timestamp) async throws -> ReviewedFraudFlag {
        try throwIfDown()
        return try state.withLock { state in
            guard let flag = state.flags[flagID] else { throw FraudReviewRefusal.unknownFlag }
            if let review = state.reviews[flagID] { throw FraudReviewRefusal.alreadyReviewed(review.decision.status) }
            let review = FraudReview(decision: decision, note: note, reviewer: reviewer, reviewedAt: at.millisecondsSinceEpoch)
            state.reviews[flagID] = review
            state.audit.append(FraudAuditEntry(
                id: Int64(state.audit.count + 1), at: at.millisecondsSinceEpoch, actor: reviewer, action: "review-\(decision.rawValue)",
                userID: flag.userID, flagID: flagID, note: note))
            if decision == .confirm { state.banned.insert(flag.userID) }
            return ReviewedFraudFlag(flag: flag, review: review)
        }
    }

    public func audit(userID: String?, from: Int64?, to: Int64?, limit: Int) async throws -> [FraudAuditEntry] {
        try throwIfDown()
        return state.withLock { state in
            Array(state.audit.filter { entry in
                (userID.map { entry.userID == $0 } ?? true) && (from.map { entry.at >= $0 } ?? true) && (to.map { entry.at < $0 } ?? true)
            }.prefix(limit))
        }
    }

    public func recentEvents(userID: String, limit: Int) async throws -> [ScoreEvent] {
        try throwIfDown()
        return state.withLock { Array(($0.events[userID] ?? []).reversed().prefix(limit)) }
    }
}

/// The fraud-flags topic in memory: flags handed to the feed as the Kafka source would, each send returning once the
/// feed took it.
public typealias MemoryFraudFlagSource = MemoryBatchSource<PositionedFraudFlag>

extension MemoryBatchSource: FraudFlagSource where Value == PositionedFraudFlag {}

/// A topic read from its end, in memory: batches handed to the reader as a Kafka source would, each ``send(_:)``
/// returning once the reader took it (so a test knows the feed has it).
public final class MemoryBatchSource<Value: Sendable>: Sendable {
    typealias Delivery = (values: [Value], taken: CheckedContinuation<Void, Never>)
    private let deliveries: AsyncStream<Delivery>
    private let input: AsyncStream<Delivery>.Continuation

    public init() {
        (deliveries, input) = AsyncStream.makeStream(of: Delivery.self)
    }

    public func send(_ values: [Value]) async {
        await withCheckedContinuation { continuation in
            if case .terminated = input.yield((values, continuation)) { continuation.resume() }
        }
    }

    /// Hands every batch sent to `handle` until graceful shutdown or cancellation.
    public func run(_ handle: @escaping @Sendable ([Value]) -> Void) async throws {
        for await delivery in deliveries.cancelOnGracefulShutdown() {
            handle(delivery.values)
            delivery.taken.resume()
        }
        input.finish()
    }
}
