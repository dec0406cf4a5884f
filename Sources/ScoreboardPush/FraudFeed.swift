import Foundation
import Logging
import NIOCore
import ScoreboardCore
import ServiceLifecycle
import Synchronization

/// A flag read from the fraud-flags topic, with where it was read: its partition and offset are its feed position.
public struct PositionedFraudFlag: Sendable, Hashable {
    public var partition: Int32
    public var offset: Int64
    public var flag: FraudFlagMessage

    public init(partition: Int32, offset: Int64, flag: FraudFlagMessage) {
        self.partition = partition
        self.offset = offset
        self.flag = flag
    }
}

/// The fraud-flags topic (Kafka), read from its end by every push process, in order per partition. The adapter owns
/// the decoding (a message that is not a flag is skipped).
public protocol FraudFlagSource: Sendable {
    /// Reads until graceful shutdown or cancellation, handing every batch of flags to `handle`, in order.
    func run(_ handle: @escaping @Sendable ([PositionedFraudFlag]) -> Void) async throws
}

/// Where a reader of the feed is: the last offset seen per fraud-flags partition. Spelt `0-12.1-5` (partition-offset
/// pairs joined by `.`), the `id` of each SSE event.
public struct FraudFeedPosition: Sendable, Hashable {
    public var offsets: [Int32: Int64]

    public init(offsets: [Int32: Int64] = [:]) { self.offsets = offsets }

    public init?(_ text: String) {
        guard !text.isEmpty, text.count <= 1_000 else { return nil }
        var offsets: [Int32: Int64] = [:]
        for pair in text.split(separator: ".", omittingEmptySubsequences: false) {
            let parts = pair.split(separator: "-", omittingEmptySubsequences: false)
            guard parts.count == 2, let partition = Int32(parts[0]), partition >= 0, let offset = Int64(parts[1]), offset >= 0 else { return nil }
            offsets[partition] = offset
        }
        self.offsets = offsets
    }

    public var text: String { offsets.sorted { $0.key < $1.key }.map { "\($0.key)-\($0.value)" }.joined(separator: ".") }
}

/// The fraud review feed: every flag the workers publish, with the user's recent events, to every admin subscribed,
/// resumable by position. It keeps the last ``Configuration/history`` flags: a subscriber whose position is among
/// them gets the flags after it again; any other (a first visit, a position too old or from before this process
/// started) gets a snapshot of the open flags from the review store first. A subscriber is registered before its
/// snapshot is read, so a flag published meanwhile is in the snapshot, or after it, or both (readers keep one per
/// `flagId`), never lost. A subscriber that falls `bufferLimit` frames behind is dropped (its stream ends) and resumes
/// with its last position.
public final class FraudFeed: Service, Sendable {
    public struct Configuration: Sendable {
        public var history = 1_000
        public var bufferLimit = 1_000
        public var heartbeatInterval: Duration = .seconds(15)
        /// Recent events shown with each flag.
        public var recentEvents = 20
        /// Open flags in a snapshot.
        public var snapshotFlags = 200
        /// Bound on one read of the review store (recent events, a snapshot).
        public var storeDeadline: Duration = .seconds(5)

        public init() {}
    }

    /// What a subscriber receives.
    public enum Item: Sendable {
        /// An SSE event's bytes, ready to write.
        case event(ByteBuffer)
        case heartbeat
    }

    struct Entry {
        var partition: Int32
        var offset: Int64
        var event: ByteBuffer
    }

    /// A subscriber, and while its snapshot is being read, the flags published meanwhile (sent after it).
    struct Subscriber {
        var continuation: AsyncStream<Item>.Continuation
        var pending: [ByteBuffer]?
    }

    struct State {
        var history: [Entry] = []
        /// The offset of the oldest flag held per partition (what a position must reach to be resumed from).
        var head: [Int32: Int64] = [:]
        var position = FraudFeedPosition()
        var subscribers: [UInt64: Subscriber] = [:]
        var nextID: UInt64 = 0
        var isStopped = false
    }

    let configuration: Configuration
    let source: any FraudFlagSource
    let reviews: (any FraudReviews)?
    let logger: Logger
    private let state = Mutex(State())

    public init(configuration: Configuration = .init(), source: any FraudFlagSource, reviews: (any FraudReviews)?, logger: Logger) {
        self.configuration = configuration
        self.source = source
        self.reviews = reviews
        self.logger = logger
    }

    /// A flag as the feed shows it: the flag and the user's recent events, newest first.
    struct FeedFlag: Encodable {
        var flag: FraudFlagMessage
        var recentEvents: [ScoreEvent]

        enum CodingKeys: String, CodingKey { case recentEvents }

        func encode(to encoder: any Encoder) throws {
            try flag.encode(to: encoder)
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(recentEvents, forKey: .recentEvents)
        }
    }

    public func run() async throws {
        let (flags, input) = AsyncStream.makeStream(of: [PositionedFraudFlag].self)
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [source, logger] in
                do {
                    try await source.run { input.yield($0) }
                } catch {
                    logger.error("the fraud-flags topic cannot be read: the fraud feed stops", metadata: ["error": "\(error)"])
                }
                input.finish()
            }
            group.addTask { [self] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: configuration.heartbeatInterval)
                    broadcast(.heartbeat)
                }
            }
            for await batch in flags.cancelOnGracefulShutdown() {
                for positioned in batch { await publish(positioned) }
            }
            group.cancelAll()
        }
        let subscribers = state.withLock { state in
            state.isStopped = true
            defer { state.subscribers = [:] }
            return state.subscribers.values.map(\.continuation)
        }
        for subscriber in subscribers { subscriber.finish() }
    }

    /// Encodes the flag once with the user's recent events, keeps it, and hands it to every subscriber.
    func publish(_ positioned: PositionedFraudFlag) async {
        let events = await recentEvents(of: positioned.flag.userID)
        state.withLock { state in
            state.position.offsets[positioned.partition] = positioned.offset
            let event = Self.event(id: state.position.text, name: "flag", json: Self.json(["type": "flag"], FeedFlag(flag: positioned.flag, recentEvents: events)))
            state.history.append(Entry(partition: positioned.partition, offset: positioned.offset, event: event))
            if state.head[positioned.partition] == nil { state.head[positioned.partition] = positioned.offset }
            if state.history.count > configuration.history {
                let dropped = state.history.removeFirst()
                // The partition's oldest held flag is now its next one (or none is held: then nothing before now is).
                state.head[dropped.partition] = state.history.first { $0.partition == dropped.partition }?.offset ?? dropped.offset + 1
            }
            // Under the lock that registers subscribers: each gets every flag once, in order, after its replay or snapshot.
            Self.deliver(.event(event), to: &state, limit: configuration.bufferLimit)
        }
    }

    private func broadcast(_ item: Item) {
        state.withLock { Self.deliver(item, to: &$0, limit: configuration.bufferLimit) }
    }

    /// Hands `item` to every subscriber (a heartbeat only to those already live). A subscriber too far behind is
    /// dropped: its stream ends, and the client resumes from its last position.
    private static func deliver(_ item: Item, to state: inout State, limit: Int) {
        for (id, subscriber) in state.subscribers {
            if subscriber.pending != nil {
                guard case .event(let event) = item else { continue }
                state.subscribers[id]!.pending!.append(event)
                if state.subscribers[id]!.pending!.count > limit {
                    subscriber.continuation.finish()
                    state.subscribers[id] = nil
                }
            } else if case .dropped = subscriber.continuation.yield(item) {
                subscriber.continuation.finish()
                state.subscribers[id] = nil
            }
        }
    }

    /// Registers a subscriber and returns its stream: the flags after `since` when they are held, otherwise a snapshot
    /// of the open flags first. Throws when the snapshot cannot be read (the caller answers 503).
    public func subscribe(since: FraudFeedPosition?) async throws -> AsyncStream<Item> {
        let (stream, continuation) = AsyncStream.makeStream(of: Item.self, bufferingPolicy: .bufferingOldest(configuration.bufferLimit))
        let registered = state.withLock { state -> (id: UInt64, position: String)? in
            guard !state.isStopped else { return nil }
            let id = state.nextID
            state.nextID += 1
            // The replay is taken under the lock that delivers flags: each flag is in it or delivered after it.
            if let since, let replay = Self.replay(after: since, state) {
                for event in replay { continuation.yield(.event(event)) }
                state.subscribers[id] = Subscriber(continuation: continuation, pending: nil)
            } else {
                state.subscribers[id] = Subscriber(continuation: continuation, pending: [])
            }
            // The snapshot's id: the flags after this position are the ones `pending` collects.
            return (id, state.position.text)
        }
        guard let (id, position) = registered else {
            continuation.finish()
            return stream
        }
        continuation.onTermination = { [weak self] _ in self?.state.withLock { _ = $0.subscribers.removeValue(forKey: id) } }
        guard state.withLock({ $0.subscribers[id]?.pending != nil }) else { return stream }
        // Registered before the snapshot is read: a flag published meanwhile waits in `pending` and follows it.
        do {
            let snapshot = try await snapshotEvent(position: position)
            state.withLock { state in
                guard let pending = state.subscribers[id]?.pending else { return }
                continuation.yield(.event(snapshot))
                for event in pending { continuation.yield(.event(event)) }
                state.subscribers[id]?.pending = nil
            }
            return stream
        } catch {
            state.withLock { _ = $0.subscribers.removeValue(forKey: id) }
            continuation.finish()
            throw error
        }
    }

    /// The held flags after `position`, or `nil` when a partition's flags after it are not all held.
    static func replay(after position: FraudFeedPosition, _ state: State) -> [ByteBuffer]? {
        for (partition, current) in state.position.offsets {
            let seen = position.offsets[partition] ?? -1
            guard seen < current else { continue }
            // The next flag after `seen` must be held.
            guard let head = state.head[partition], head <= seen + 1 else { return nil }
        }
        return state.history.filter { $0.offset > (position.offsets[$0.partition] ?? -1) }.map(\.event)
    }

    /// A snapshot of the open flags, each with the user's recent events.
    func snapshotEvent(position: String) async throws -> ByteBuffer {
        guard let reviews else { throw FraudFeedUnavailable() }
        let limit = configuration.snapshotFlags
        let open = try await withTimeout(configuration.storeDeadline) { try await reviews.flags(FraudFlagQuery(status: .open, limit: limit)) }
        var eventsByUser: [String: [ScoreEvent]] = [:]
        for user in Set(open.map(\.flag.userID)).sorted() { eventsByUser[user] = await recentEvents(of: user) }
        struct Snapshot: Encodable { var type = "snapshot"; var flags: [FeedFlag] }
        let snapshot = Snapshot(flags: open.map { FeedFlag(flag: $0.flag, recentEvents: eventsByUser[$0.flag.userID] ?? []) })
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let json = String(decoding: try encoder.encode(snapshot), as: UTF8.self)
        return Self.event(id: position.isEmpty ? nil : position, name: "snapshot", json: json)
    }

    /// The user's recent events; none when the store does not answer in time (the flag itself matters more).
    func recentEvents(of userID: String) async -> [ScoreEvent] {
        guard let reviews else { return [] }
        let limit = configuration.recentEvents
        do {
            return try await withTimeout(configuration.storeDeadline) { try await reviews.recentEvents(userID: userID, limit: limit) }
        } catch {
            logger.warning("fraud feed: the user's recent events could not be read", metadata: ["fraud.user": "\(userID)", "error": "\(error)"])
            return []
        }
    }

    static func event(id: String?, name: String, json: String) -> ByteBuffer {
        ByteBuffer(string: (id.map { "id: \($0)\n" } ?? "") + "event: \(name)\ndata: \(json)\n\n")
    }

    /// `{"type": …, "flag": {…}}` with sorted keys.
    static func json(_ fields: [String: String], _ flag: FeedFlag) -> String {
        struct Frame: Encodable { var type: String; var flag: FeedFlag }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = try? encoder.encode(Frame(type: fields["type"] ?? "flag", flag: flag))
        return String(decoding: data ?? Data("{}".utf8), as: UTF8.self)
    }
}

/// The feed has no review store to read a snapshot from.
struct FraudFeedUnavailable: Error {}
