import Foundation
import Logging
import Metrics
import ScoreboardCore
import ScoreboardKafka
import ServiceLifecycle
import Synchronization

/// An update as clients receive it: the leaderboard-updates offset is its sequence. One board stream is keyed to one
/// partition, so a stream's sequences only grow.
public struct SequencedUpdate: Sendable, Hashable, Codable {
    public var sequence: Int64
    public var update: LeaderboardUpdate

    public init(sequence: Int64, update: LeaderboardUpdate) {
        self.sequence = sequence
        self.update = update
    }
}

/// Reads the leaderboard-updates topic and fans each update out to the subscribers of its board stream and of its
/// member, keeping the recent updates of every stream so that reconnecting clients can resume.
///
/// Every push gateway reads every partition: it joins a consumer group of its own (`groupID` is unique per process)
/// and starts at the end of the log. Fan-out never waits on a client: it appends to each subscriber's bounded
/// ``SubscriberBuffer``, which coalesces or, past its bound, drops the client.
public final class UpdateFeed: Service, Sendable {
    public struct Configuration: Sendable {
        public var consumer: KafkaConsumerConfiguration
        public var topic: String
        /// Updates kept per board stream for resuming clients.
        public var historyPerStream = 2_000

        public init(consumer: KafkaConsumerConfiguration, topic: String) {
            self.consumer = consumer
            self.topic = topic
        }
    }

    struct History {
        var updates: [SequencedUpdate] = []
        /// The highest sequence evicted from this stream's history: a client behind it must take a snapshot.
        var evictedThrough: Int64 = -1
        /// The partition the stream is keyed to, once an update showed it.
        var partition: Int32?
    }

    struct State {
        var histories: [String: History] = [:]
        /// Per partition, the first offset this feed read: a client resuming from before it may have missed updates.
        var startOffsets: [Int32: Int64] = [:]
        /// Per partition, the last offset read.
        var lastOffsets: [Int32: Int64] = [:]
        var streamSubscribers: [String: [ObjectIdentifier: SubscriberBuffer]] = [:]
        var userSubscribers: [String: [ObjectIdentifier: SubscriberBuffer]] = [:]
        var isAssigned = false
    }

    let configuration: Configuration
    let logger: Logger
    let state = Mutex(State())

    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    public var isReady: Bool { state.withLock { $0.isAssigned } }

    public func run() async throws {
        let handler = KafkaRebalanceHandler(onAssign: { [self] partitions in
            state.withLock { $0.isAssigned = true }
            logger.info("update feed assigned", metadata: ["partitions": "\(partitions.count)"])
            return Dictionary(uniqueKeysWithValues: partitions.map { ($0, KafkaStartOffset.end) })
        })
        let consumer = try KafkaConsumer(configuration: configuration.consumer, topics: [configuration.topic], rebalanceHandler: handler, logger: logger)
        let decoder = JSONDecoder()
        do {
            for try await batch in consumer.batches.cancelOnGracefulShutdown() {
                var updates: [(Int32, SequencedUpdate)] = []
                for message in batch.messages {
                    guard let update = try? decoder.decode(LeaderboardUpdate.self, from: Data(message.value)) else { continue }
                    updates.append((message.partition, SequencedUpdate(sequence: message.offset, update: update)))
                }
                deliver(updates)
            }
        } catch {
            await consumer.close()
            throw error
        }
        await consumer.close()
    }

    func deliver(_ updates: [(partition: Int32, update: SequencedUpdate)]) {
        let historyLimit = configuration.historyPerStream
        state.withLock { state in
            for (partition, sequenced) in updates {
                if state.startOffsets[partition] == nil { state.startOffsets[partition] = sequenced.sequence }
                state.lastOffsets[partition] = sequenced.sequence
                let stream = sequenced.update.streamID
                var history = state.histories[stream, default: History()]
                history.updates.append(sequenced)
                history.partition = partition
                if history.updates.count > historyLimit {
                    let evicted = history.updates.count - historyLimit
                    history.evictedThrough = history.updates[evicted - 1].sequence
                    history.updates.removeFirst(evicted)
                }
                state.histories[stream] = history
                for subscriber in (state.streamSubscribers[stream] ?? [:]).values { subscriber.append(sequenced) }
                for subscriber in (state.userSubscribers[sequenced.update.userID] ?? [:]).values { subscriber.append(sequenced) }
            }
        }
        Counter(label: "push_updates_received_total").increment(by: updates.count)
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
            state.streamSubscribers[stream.id, default: [:]][ObjectIdentifier(subscriber)] = subscriber
            let history = state.histories[stream.id] ?? History()
            let latest = history.updates.last?.sequence ?? -1
            if let since, since >= history.evictedThrough, Self.feedCovers(since: since, partition: history.partition, state: state) {
                if since > latest && latest >= 0 { return .snapshot(sequence: latest) }  // from the future: a new log
                return .resume(history.updates.filter { $0.sequence > since })
            }
            return .snapshot(sequence: latest)
        }
    }

    /// The feed has read everything after `since` on the stream's partition.
    static func feedCovers(since: Int64, partition: Int32?, state: State) -> Bool {
        guard let partition, let start = state.startOffsets[partition] else { return false }
        return since >= start - 1
    }

    public func subscribe(_ subscriber: SubscriberBuffer, toUser userID: String) {
        state.withLock { $0.userSubscribers[userID, default: [:]][ObjectIdentifier(subscriber)] = subscriber }
    }

    public func unsubscribe(_ subscriber: SubscriberBuffer) {
        let id = ObjectIdentifier(subscriber)
        state.withLock { state in
            for key in state.streamSubscribers.keys { state.streamSubscribers[key]?[id] = nil }
            for key in state.userSubscribers.keys { state.userSubscribers[key]?[id] = nil }
            state.streamSubscribers = state.streamSubscribers.filter { !$0.value.isEmpty }
            state.userSubscribers = state.userSubscribers.filter { !$0.value.isEmpty }
        }
    }
}

/// What a stream connection sends, in order.
public enum OutboundItem: Sendable, Equatable {
    case update(SequencedUpdate)
    /// A board's top N, labelled with the stream sequence it reflects at least.
    case snapshot(stream: String, sequence: Int64, page: BoardPage)

    public var order: (Int64, Int) {
        switch self {
        case .update(let update): (update.sequence, 1)
        case .snapshot(_, let sequence, _): (sequence, 0)
        }
    }
}

/// One client's pending items, bounded. While the client keeps up it gets every update in order; when more than
/// `coalesceThreshold` are pending, updates of the same board and member are coalesced into the latest (totals are
/// absolute, so only intermediate values go); past `limit` after that the client is dropped, so one slow reader never
/// holds memory or the feed hostage.
public final class SubscriberBuffer: Sendable {
    struct State {
        var queue: [OutboundItem] = []
        var waiter: CheckedContinuation<Void, Never>?
        var holds = 0
        var isOverflowed = false
        var isClosed = false
        var coalesced = 0
    }

    public let limit: Int
    public let coalesceThreshold: Int
    private let state = Mutex(State())

    public init(limit: Int, coalesceThreshold: Int? = nil) {
        self.limit = limit
        self.coalesceThreshold = coalesceThreshold ?? max(1, limit / 2)
    }

    public func append(_ update: SequencedUpdate) { append([.update(update)]) }

    public func append(_ items: [OutboundItem]) {
        guard !items.isEmpty else { return }
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard !state.isClosed, !state.isOverflowed else { return nil }
            state.queue.append(contentsOf: items)
            if state.queue.count > coalesceThreshold {
                let before = state.queue.count
                state.queue = Self.coalesce(state.queue)
                state.coalesced += before - state.queue.count
                if state.queue.count > limit {
                    state.isOverflowed = true
                    state.queue = []
                }
            }
            return state.holds == 0 || state.isOverflowed ? Self.takeWaiter(&state) : nil
        }
        waiter?.resume()
    }

    /// Keeps the newest update per board and member; snapshots stay.
    static func coalesce(_ queue: [OutboundItem]) -> [OutboundItem] {
        var newest: [String: Int64] = [:]
        for case .update(let update) in queue {
            let key = update.update.board + "\u{0}" + update.update.userID
            newest[key] = max(newest[key] ?? Int64.min, update.sequence)
        }
        return queue.filter { item in
            guard case .update(let update) = item else { return true }
            return newest[update.update.board + "\u{0}" + update.update.userID] == update.sequence
        }
    }

    private static func takeWaiter(_ state: inout State) -> CheckedContinuation<Void, Never>? {
        let waiter = state.waiter
        state.waiter = nil
        return waiter
    }

    /// Holds delivery while a snapshot is being read, so that no update overtakes it.
    public func hold() { state.withLock { $0.holds += 1 } }

    public func release() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.holds -= 1
            return state.holds == 0 ? Self.takeWaiter(&state) : nil
        }
        waiter?.resume()
    }

    public enum Drain: Sendable, Equatable {
        case items([OutboundItem])
        /// The client fell too far behind and must reconnect (and resume or take a snapshot).
        case overflowed
        case closed
    }

    /// Waits until something can be sent, then takes all of it, ordered by sequence (a snapshot before the updates
    /// after it). Returns `nil` when `idle` passed with nothing to send (time for a heartbeat). Cancelling the waiting
    /// task closes the buffer.
    public func next(idle: Duration) async -> Drain? {
        if let drained = takeNow() { return drained }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withTaskCancellationHandler {
                    await withCheckedContinuation { continuation in
                        let resumeNow = self.state.withLock { state -> Bool in
                            if state.isOverflowed || state.isClosed || (!state.queue.isEmpty && state.holds == 0) { return true }
                            state.waiter = continuation
                            return false
                        }
                        if resumeNow { continuation.resume() }
                    }
                } onCancel: {
                    self.state.withLock { Self.takeWaiter(&$0) }?.resume()
                }
            }
            group.addTask { try? await Task.sleep(for: idle) }
            await group.next()
            group.cancelAll()
        }
        if Task.isCancelled { close() }
        return takeNow()
    }

    /// Whatever can be sent now, without waiting (`nil`: nothing).
    public func takeNow() -> Drain? {
        state.withLock { state in
            if state.isOverflowed { return .overflowed }
            if !state.queue.isEmpty && state.holds == 0 {
                let items = state.queue.sorted { $0.order < $1.order }
                state.queue = []
                return .items(items)
            }
            if state.isClosed { return .closed }
            return nil
        }
    }

    /// Wakes the reader with `.closed` once nothing is pending.
    public func close() {
        state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.isClosed = true
            return Self.takeWaiter(&state)
        }?.resume()
    }

    public var coalescedCount: Int { state.withLock { $0.coalesced } }
}
