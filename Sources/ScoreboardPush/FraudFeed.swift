import Foundation
import Logging
import Metrics
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

    /// ``run(_:)``, calling `onAssigned` once the source holds its partitions (from then on every flag published
    /// arrives).
    func run(onAssigned: @escaping @Sendable () -> Void, _ handle: @escaping @Sendable ([PositionedFraudFlag]) -> Void) async throws
}

extension FraudFlagSource {
    /// A source that holds its partitions from the start.
    public func run(onAssigned: @escaping @Sendable () -> Void, _ handle: @escaping @Sendable ([PositionedFraudFlag]) -> Void) async throws {
        onAssigned()
        try await run(handle)
    }
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
/// with its last position. Each flag is encoded once per transport: an SSE event (`id:` the position) and a WebSocket
/// text message (the same JSON with the position as its `id` member).
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
        /// A frame's bytes in the subscriber's transport (an SSE event, or a WebSocket message's JSON), ready to write.
        case event(ByteBuffer)
        case heartbeat
    }

    /// How a subscriber's frames are written.
    public enum Transport: Sendable {
        case serverSentEvents
        case webSocket
    }

    /// One frame in both transports.
    struct Frames {
        var sse: ByteBuffer
        var webSocket: ByteBuffer

        func bytes(for transport: Transport) -> ByteBuffer {
            switch transport {
            case .serverSentEvents: sse
            case .webSocket: webSocket
            }
        }
    }

    /// What the feed hands its subscribers.
    enum Delivery {
        case frames(Frames)
        case heartbeat
    }

    struct Entry {
        var partition: Int32
        var offset: Int64
        var frames: Frames
    }

    /// A subscriber, and while its snapshot is being read, the flags published meanwhile (sent after it).
    struct Subscriber {
        var continuation: AsyncStream<Item>.Continuation
        var transport: Transport
        var pending: [Frames]?
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
    private let assigned = Latch()
    private let gaveUp = Latch()

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

    /// The source holds its partitions: a flag published from now on reaches the subscribers (part of the push role's
    /// readiness). Or it failed: then the feed is logged and counted as stopped, but it does not take the process's
    /// board streams out of service.
    public var isReady: Bool { assigned.isOpen || gaveUp.isOpen }

    public func run() async throws {
        let (flags, input) = AsyncStream.makeStream(of: [PositionedFraudFlag].self)
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [source, logger, assigned, gaveUp] in
                do {
                    try await source.run(onAssigned: { assigned.open() }) { input.yield($0) }
                } catch {
                    logger.error("the fraud-flags topic cannot be read: the fraud feed stops", metadata: ["error": "\(error)"])
                    Counter(label: "push_feed_failures_total", dimensions: [("feed", "fraud-flags")]).increment()
                    gaveUp.open()
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
            let frames = Self.flagFrames(id: state.position.text, FeedFlag(flag: positioned.flag, recentEvents: events))
            state.history.append(Entry(partition: positioned.partition, offset: positioned.offset, frames: frames))
            if state.head[positioned.partition] == nil { state.head[positioned.partition] = positioned.offset }
            if state.history.count > configuration.history {
                let dropped = state.history.removeFirst()
                // The partition's oldest held flag is now its next one (or none is held: then nothing before now is).
                state.head[dropped.partition] = state.history.first { $0.partition == dropped.partition }?.offset ?? dropped.offset + 1
            }
            // Under the lock that registers subscribers: each gets every flag once, in order, after its replay or snapshot.
            Self.deliver(.frames(frames), to: &state, limit: configuration.bufferLimit)
        }
    }

    private func broadcast(_ item: Delivery) {
        state.withLock { Self.deliver(item, to: &$0, limit: configuration.bufferLimit) }
    }

    /// Hands `item` to every subscriber (a heartbeat only to those already live). A subscriber too far behind is
    /// dropped: its stream ends, and the client resumes from its last position.
    private static func deliver(_ item: Delivery, to state: inout State, limit: Int) {
        for (id, subscriber) in state.subscribers {
            if subscriber.pending != nil {
                guard case .frames(let frames) = item else { continue }
                state.subscribers[id]!.pending!.append(frames)
                if state.subscribers[id]!.pending!.count > limit {
                    subscriber.continuation.finish()
                    state.subscribers[id] = nil
                }
            } else if case .dropped = subscriber.continuation.yield(item.item(for: subscriber.transport)) {
                subscriber.continuation.finish()
                state.subscribers[id] = nil
            }
        }
    }

    /// Registers a subscriber and returns its stream, in `transport`'s frames: the flags after `since` when they are
    /// held, otherwise a snapshot of the open flags first. Throws when the snapshot cannot be read (the caller answers
    /// 503).
    public func subscribe(since: FraudFeedPosition?, transport: Transport = .serverSentEvents) async throws -> AsyncStream<Item> {
        let (stream, continuation) = AsyncStream.makeStream(of: Item.self, bufferingPolicy: .bufferingOldest(configuration.bufferLimit))
        let registered = state.withLock { state -> (id: UInt64, position: String)? in
            guard !state.isStopped else { return nil }
            let id = state.nextID
            state.nextID += 1
            // The replay is taken under the lock that delivers flags: each flag is in it or delivered after it.
            if let since, let replay = Self.replay(after: since, state) {
                for frames in replay { continuation.yield(.event(frames.bytes(for: transport))) }
                state.subscribers[id] = Subscriber(continuation: continuation, transport: transport, pending: nil)
            } else {
                state.subscribers[id] = Subscriber(continuation: continuation, transport: transport, pending: [])
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
                continuation.yield(.event(snapshot.bytes(for: transport)))
                for frames in pending { continuation.yield(.event(frames.bytes(for: transport))) }
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
    static func replay(after position: FraudFeedPosition, _ state: State) -> [Frames]? {
        for (partition, current) in state.position.offsets {
            let seen = position.offsets[partition] ?? -1
            guard seen < current else { continue }
            // The next flag after `seen` must be held.
            guard let head = state.head[partition], head <= seen + 1 else { return nil }
        }
        return state.history.filter { $0.offset > (position.offsets[$0.partition] ?? -1) }.map(\.frames)
    }

    /// A snapshot of the open flags, each with the user's recent events.
    func snapshotEvent(position: String) async throws -> Frames {
        guard let reviews else { throw FraudFeedUnavailable() }
        let limit = configuration.snapshotFlags
        let open = try await withTimeout(configuration.storeDeadline) { try await reviews.flags(FraudFlagQuery(status: .open, limit: limit)) }
        var eventsByUser: [String: [ScoreEvent]] = [:]
        for user in Set(open.map(\.flag.userID)).sorted() { eventsByUser[user] = await recentEvents(of: user) }
        struct Snapshot: Encodable { var type = "snapshot"; var id: String?; var flags: [FeedFlag] }
        let flags = open.map { FeedFlag(flag: $0.flag, recentEvents: eventsByUser[$0.flag.userID] ?? []) }
        let id = position.isEmpty ? nil : position
        return Frames(
            sse: Self.event(id: id, name: "snapshot", json: Self.json(Snapshot(flags: flags))),
            webSocket: ByteBuffer(string: Self.json(Snapshot(id: id, flags: flags))))
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

    /// A flag's frames: the SSE event `{"flag": {…}, "type": "flag"}` with the position as its `id:`, and the
    /// WebSocket message, the same object with the position as its `id` member.
    static func flagFrames(id: String, _ flag: FeedFlag) -> Frames {
        struct Frame: Encodable { var type = "flag"; var id: String?; var flag: FeedFlag }
        return Frames(
            sse: event(id: id, name: "flag", json: json(Frame(flag: flag))), webSocket: ByteBuffer(string: json(Frame(id: id, flag: flag))))
    }

    /// JSON with sorted keys (a `nil` optional left out).
    static func json(_ value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = try? encoder.encode(value)
        return String(decoding: data ?? Data("{}".utf8), as: UTF8.self)
    }
}

extension FraudFeed.Delivery {
    func item(for transport: FraudFeed.Transport) -> FraudFeed.Item {
        switch self {
        case .frames(let frames): .event(frames.bytes(for: transport))
        case .heartbeat: .heartbeat
        }
    }
}

/// The feed has no review store to read a snapshot from.
struct FraudFeedUnavailable: Error {}
