import Logging
import Metrics
import ScoreboardCore
import ServiceLifecycle
import Synchronization

/// An update as clients receive it: one leaderboard-updates message, the changes of one board period (one member
/// for a schema version 1 message, every member a worker batch changed for version 2), whose offset is its sequence.
/// One board stream is keyed to one partition, so a stream's sequences only grow; one message is one sequence, so a
/// client resuming after a sequence gets every member change after it and none twice.
///
/// A class, immutable: the feed hands the same instance to the history and to every subscriber's buffer, so queueing
/// it costs a pointer and a retain per subscriber, and its frame is encoded once, by the first sender, for all.
public final class SequencedUpdate: Sendable, Hashable, CustomStringConvertible {
    public let sequence: Int64
    public let changes: BoardChanges
    /// The frame's bytes, encoded on first use. Not part of equality.
    private let encoded = Mutex<EncodedFrame?>(nil)

    public init(sequence: Int64, changes: BoardChanges) {
        self.sequence = sequence
        self.changes = changes
    }

    /// A schema version 1 message: one member's change.
    public convenience init(sequence: Int64, update: LeaderboardUpdate) {
        self.init(sequence: sequence, changes: BoardChanges(update))
    }

    public var streamID: String { changes.streamID }

    /// The update's frame on both transports, encoded on first use and then shared by every subscriber.
    public var frame: EncodedFrame {
        if let frame = encoded.withLock({ $0 }) { return frame }
        // Encoded outside the lock: two senders racing both encode, and the first stored wins (the same bytes).
        let frame = FrameEncoding.encode(self)
        return encoded.withLock { stored in
            if let stored { return stored }
            stored = frame
            return frame
        }
    }

    /// The same update as a member's personal channel gets it: that member's entry only.
    func only(_ member: BoardChanges.Member) -> SequencedUpdate {
        var changes = changes
        changes.members = [member]
        return SequencedUpdate(sequence: sequence, changes: changes)
    }

    public static func == (lhs: SequencedUpdate, rhs: SequencedUpdate) -> Bool {
        lhs.sequence == rhs.sequence && lhs.changes == rhs.changes
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(sequence)
        hasher.combine(changes)
    }

    public var description: String { "#\(sequence) \(changes.board) \(changes.members.map { "\($0.userID)=\($0.total)" })" }
}

/// Reads the leaderboard updates (its ``UpdateSource``) and fans each one out to the subscribers of its board stream
/// and of its member, keeping the recent updates of every stream so that reconnecting clients can resume.
///
/// Every push gateway reads every partition from the end of the log. Fan-out never waits on a client: it appends to
/// each subscriber's bounded ``SubscriberBuffer``, which coalesces or, past its bound, drops the client.
///
/// A new incarnation of the log (its offsets start again from 0) begins a new *epoch*: the histories are dropped,
/// every open stream is dropped (the client reconnects with its last sequence and gets a fresh snapshot), and no
/// sequence at or below the last one read from an earlier incarnation is resumed from again, since it may name an
/// update of either log.
public final class UpdateFeed: Service, Sendable {
    public struct Configuration: Sendable {
        /// Updates kept per board stream for resuming clients (at least this many; trimming happens in steps of
        /// half of it, so that it costs O(1) per update).
        public var historyPerStream = 2_000
        /// Board streams that keep a history. Past it, the streams updated least recently lose theirs (a client
        /// resuming on one gets a snapshot instead), so a flood of distinct boards cannot grow memory without bound.
        public var maximumStreamsWithHistory = 10_000

        public init() {}
    }

    struct History {
        var updates: [SequencedUpdate] = []
        /// The highest sequence evicted from this stream's history: a client behind it must take a snapshot.
        var evictedThrough: Int64 = -1
        /// The partition the stream is keyed to, once an update showed it.
        var partition: Int32?
        /// When the stream was last updated, in updates delivered: what the eviction of whole histories goes by.
        var lastUpdate = 0

        /// Appends in place (the caller mutates through the dictionary, so the array is not copied) and trims the
        /// oldest half-limit at a time: amortised O(1).
        mutating func record(_ update: SequencedUpdate, partition: Int32, limit: Int, tick: Int) {
            updates.append(update)
            self.partition = partition
            lastUpdate = tick
            if updates.count >= limit + max(1, limit / 2) {
                let evicted = updates.count - limit
                evictedThrough = updates[evicted - 1].sequence
                updates.removeFirst(evicted)
            }
        }
    }

    /// What one subscriber is registered for: its own index, so that a disconnect costs O(its subscriptions).
    struct Subscriptions {
        let buffer: SubscriberBuffer
        var streams: Set<String> = []
        var users: Set<String> = []
    }

    struct State {
        var histories: [String: History] = [:]
        /// Updates delivered so far: the clock of history eviction.
        var tick = 0
        /// Per partition, the first offset this feed read: a client resuming from before it may have missed updates.
        var startOffsets: [Int32: Int64] = [:]
        /// Per partition, the last offset read.
        var lastOffsets: [Int32: Int64] = [:]
        /// Per partition, the highest offset read in an earlier incarnation of the log: a sequence at or below it may
        /// belong to either log, so it is never resumed from.
        var earlierIncarnationsThrough: [Int32: Int64] = [:]
        /// New incarnations of the log seen so far.
        var epoch = 0
        var streamSubscribers: [String: [ObjectIdentifier: SubscriberBuffer]] = [:]
        var userSubscribers: [String: [ObjectIdentifier: SubscriberBuffer]] = [:]
        var subscriptions: [ObjectIdentifier: Subscriptions] = [:]
        var isAssigned = false
        /// Subscriber registrations visited by `unsubscribe` (what its complexity test counts).
        var unsubscribeVisits = 0

        mutating func register(_ buffer: SubscriberBuffer, stream: String? = nil, user: String? = nil) {
            let id = ObjectIdentifier(buffer)
            if let stream {
                streamSubscribers[stream, default: [:]][id] = buffer
                subscriptions[id, default: Subscriptions(buffer: buffer)].streams.insert(stream)
            }
            if let user {
                userSubscribers[user, default: [:]][id] = buffer
                subscriptions[id, default: Subscriptions(buffer: buffer)].users.insert(user)
            }
        }

        mutating func unregister(_ id: ObjectIdentifier, stream: String) {
            unsubscribeVisits += 1
            streamSubscribers[stream]?[id] = nil
            if streamSubscribers[stream]?.isEmpty == true { streamSubscribers[stream] = nil }
        }

        mutating func unregister(_ id: ObjectIdentifier, user: String) {
            unsubscribeVisits += 1
            userSubscribers[user]?[id] = nil
            if userSubscribers[user]?.isEmpty == true { userSubscribers[user] = nil }
        }

        /// Drops the histories of the streams updated least recently, down to `maximum`. Runs when a quarter more
        /// than the maximum have a history, so its sort is paid for by the updates that created those histories.
        mutating func evictHistories(maximum: Int) {
            guard histories.count > maximum + max(1, maximum / 4) else { return }
            let oldest = histories.sorted { $0.value.lastUpdate < $1.value.lastUpdate }.prefix(histories.count - maximum)
            for (stream, _) in oldest { histories[stream] = nil }
        }
    }

    let configuration: Configuration
    let source: any UpdateSource
    let logger: Logger
    let state = Mutex(State())
    /// Told the boards (`board` ids, period included) each delivered batch changed, after the fan-out.
    let onBoardsChanged: (@Sendable (Set<String>) -> Void)?

    public init(
        configuration: Configuration = .init(), source: any UpdateSource, logger: Logger, onBoardsChanged: (@Sendable (Set<String>) -> Void)? = nil
    ) {
        self.configuration = configuration
        self.source = source
        self.logger = logger
        self.onBoardsChanged = onBoardsChanged
    }

    /// The source holds its partitions: updates flow.
    public var isReady: Bool { state.withLock { $0.isAssigned } }

    /// New incarnations of the log seen so far.
    public var epoch: Int { state.withLock { $0.epoch } }

    public func run() async throws {
        try await source.run { [self] event in handle(event) }
    }

    /// Applies one event of the source.
    func handle(_ event: UpdateSourceEvent) {
        switch event {
        case .assigned(let partitions):
            state.withLock { $0.isAssigned = true }
            logger.info("update feed assigned", metadata: ["partitions": "\(partitions.count)"])
        case .updates(let updates):
            deliver(updates.map { (partition: $0.partition, update: $0.update) })
        case .newIncarnation:
            beginEpoch()
        }
    }

    /// A new incarnation of the log: forgets what the old one said and drops every subscriber, woken outside the lock.
    func beginEpoch() {
        let (epoch, dropped) = state.withLock { state -> (Int, [SubscriberBuffer]) in
            state.epoch += 1
            for (partition, last) in state.lastOffsets {
                state.earlierIncarnationsThrough[partition] = max(state.earlierIncarnationsThrough[partition] ?? -1, last)
            }
            state.histories = [:]
            state.startOffsets = [:]
            state.lastOffsets = [:]
            return (state.epoch, state.subscriptions.values.map(\.buffer))
        }
        for buffer in dropped { buffer.drop() }
        logger.warning("the updates log is a new incarnation: streams start again from snapshots", metadata: [
            "push.epoch": "\(epoch)", "push.streams.dropped": "\(dropped.count)",
        ])
        Counter(label: "push_log_incarnations_total").increment()
    }

    /// Records `updates` in the histories and queues each for its subscribers, under the lock (so that a
    /// subscription starts atomically with the fan-out); the readers to wake are resumed after the lock is released.
    func deliver(_ updates: [(partition: Int32, update: SequencedUpdate)]) {
        let historyLimit = configuration.historyPerStream
        let maximumStreams = configuration.maximumStreamsWithHistory
        let wakes = state.withLock { state -> [SubscriberBuffer.Wake] in
            var wakes: [SubscriberBuffer.Wake] = []
            for (partition, sequenced) in updates {
                if state.startOffsets[partition] == nil { state.startOffsets[partition] = sequenced.sequence }
                state.lastOffsets[partition] = sequenced.sequence
                state.tick += 1
                let stream = sequenced.streamID
                state.histories[stream, default: History()].record(sequenced, partition: partition, limit: historyLimit, tick: state.tick)
                let item = [OutboundItem.update(sequenced)]
                for subscriber in (state.streamSubscribers[stream] ?? [:]).values {
                    if let wake = subscriber.enqueue(item) { wakes.append(wake) }
                }
                // Each changed member's personal channel gets its own entry, under the same sequence.
                for member in sequenced.changes.members {
                    guard let subscribers = state.userSubscribers[member.userID] else { continue }
                    let personal = [OutboundItem.update(sequenced.only(member))]
                    for subscriber in subscribers.values {
                        if let wake = subscriber.enqueue(personal) { wakes.append(wake) }
                    }
                }
            }
            state.evictHistories(maximum: maximumStreams)
            return wakes
        }
        for wake in wakes { wake.resume() }
        onBoardsChanged?(Set(updates.map(\.update.changes.board)))
        Counter(label: "push_updates_received_total").increment(by: updates.count)
    }

    /// Queues each achievement for the personal channels of its user (not for board streams, and kept in no history),
    /// under the lock that registers subscribers; the readers are woken after it.
    func deliverPersonal(_ frames: [AchievementFrame]) {
        let wakes = state.withLock { state -> [SubscriberBuffer.Wake] in
            frames.flatMap { frame in
                (state.userSubscribers[frame.notification.userID] ?? [:]).values.compactMap { $0.enqueue([.achievement(frame)]) }
            }
        }
        for wake in wakes { wake.resume() }
    }

    /// How a stream subscription starts.
    public enum Start: Sendable, Equatable {
        /// Send these missed updates, then live ones.
        case resume([SequencedUpdate])
        /// Send a snapshot taken now, labelled with this sequence (the latest the feed knows for the stream, or -1),
        /// then live updates after it.
        case snapshot(sequence: Int64)
    }

    /// Registers `subscriber` for `stream` and decides how it starts, atomically with the fan-out, so that no update
    /// falls between the history and the live feed.
    public func subscribe(_ subscriber: SubscriberBuffer, to stream: BoardStream, since: Int64?) -> Start {
        state.withLock { state in
            state.register(subscriber, stream: stream.id)
            let history = state.histories[stream.id] ?? History()
            let latest = history.updates.last?.sequence ?? -1
            if let since, since >= history.evictedThrough, Self.feedCovers(since: since, partition: history.partition, state: state) {
                if since > latest && latest >= 0 { return .snapshot(sequence: latest) }  // from the future: a new log
                return .resume(history.updates.filter { $0.sequence > since })
            }
            return .snapshot(sequence: latest)
        }
    }

    /// The feed has read everything after `since` on the stream's partition, in the current incarnation of the log.
    static func feedCovers(since: Int64, partition: Int32?, state: State) -> Bool {
        guard let partition, let start = state.startOffsets[partition] else { return false }
        return since >= start - 1 && since > state.earlierIncarnationsThrough[partition, default: -1]
    }

    public func subscribe(_ subscriber: SubscriberBuffer, toUser userID: String) {
        state.withLock { $0.register(subscriber, user: userID) }
    }

    /// Board streams `subscriber` follows (WebSocket clients are limited in how many).
    public func streamCount(of subscriber: SubscriberBuffer) -> Int {
        state.withLock { $0.subscriptions[ObjectIdentifier(subscriber)]?.streams.count ?? 0 }
    }

    /// Stops delivering `stream` to `subscriber`.
    public func unsubscribe(_ subscriber: SubscriberBuffer, from stream: BoardStream) {
        let id = ObjectIdentifier(subscriber)
        state.withLock { state in
            guard state.subscriptions[id]?.streams.remove(stream.id) != nil else { return }
            state.unregister(id, stream: stream.id)
        }
    }

    /// Removes every subscription of `subscriber`: O(its own subscriptions), whatever the others.
    public func unsubscribe(_ subscriber: SubscriberBuffer) {
        let id = ObjectIdentifier(subscriber)
        state.withLock { state in
            guard let subscriptions = state.subscriptions.removeValue(forKey: id) else { return }
            for stream in subscriptions.streams { state.unregister(id, stream: stream) }
            for user in subscriptions.users { state.unregister(id, user: user) }
        }
    }
}
