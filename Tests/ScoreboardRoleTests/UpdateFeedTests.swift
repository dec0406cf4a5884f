import Dispatch
import ScoreboardCore
@testable import ScoreboardPush
import Synchronization
import Testing

/// The feed's fan-out, in process (no broker: `deliver` is what the consumer loop calls for each batch).
struct UpdateFeedTests {
    func makeFeed(historyPerStream: Int = 2_000, maximumStreamsWithHistory: Int = 10_000) -> UpdateFeed {
        var configuration = UpdateFeed.Configuration()
        configuration.historyPerStream = historyPerStream
        configuration.maximumStreamsWithHistory = maximumStreamsWithHistory
        return UpdateFeed(configuration: configuration, source: MemoryUpdateSource(), logger: .init(label: "test"))
    }

    func update(_ sequence: Int64, board: String = "b", user: String = "u") -> SequencedUpdate {
        let key = BoardKey(window: .allTime, period: "all", dimension: .guild, value: board)
        return SequencedUpdate(sequence: sequence, update: LeaderboardUpdate(board: key, userID: user, total: sequence, rank: nil))
    }

    func stream(_ board: String) -> BoardStream { BoardStream(window: .allTime, dimension: .guild, value: board) }

    /// STYLE.md §3: no continuation is resumed while a lock is held. The reader runs on an executor that looks at the
    /// feed's lock whenever a job of the reader is enqueued, which is what resuming its continuation does,
    /// synchronously, on the resuming thread. Before the fix, `deliver` woke readers inside its lock.
    @Test func deliverWakesReadersOutsideItsLock() async throws {
        let feed = makeFeed()
        let buffer = SubscriberBuffer(limit: 100)
        #expect(feed.subscribe(buffer, to: stream("b"), since: nil) == .snapshot(sequence: -1))
        let executor = LockProbeExecutor { feed.state.withLockIfAvailable { _ in true } == nil }
        let reader = Task(executorPreference: executor) { await buffer.next(idle: .seconds(60)) }
        while !buffer.hasWaitingReader { await Task.yield() }
        feed.deliver([(partition: 0, update: update(1))])
        let drained = await reader.value
        #expect(drained == .items([.update(update(1))]))
        #expect(executor.sawLockHeld.load(ordering: .relaxed) == false, "a reader was woken while the feed's lock was held")
    }

    /// A schema version 2 message changes two members of a board at once: a board subscriber gets it as one update
    /// (one sequence), each changed member's personal channel gets its own entry only, under the same sequence, and a
    /// member the message does not change gets nothing. A version 1 message next to it is one member's update.
    @Test func aBoardChangesMessageIsOneUpdateAndEachMemberGetsItsOwnEntry() {
        let feed = makeFeed()
        let watcher = SubscriberBuffer(limit: 10)
        let alice = SubscriberBuffer(limit: 10), bob = SubscriberBuffer(limit: 10), carol = SubscriberBuffer(limit: 10)
        _ = feed.subscribe(watcher, to: stream("b"), since: nil)
        feed.subscribe(alice, toUser: "alice")
        feed.subscribe(bob, toUser: "bob")
        feed.subscribe(carol, toUser: "carol")
        let key = BoardKey(window: .allTime, period: "all", dimension: .guild, value: "b")
        let aliceEntry = BoardChanges.Member(userID: "alice", total: 5, rank: 1), bobEntry = BoardChanges.Member(userID: "bob", total: 3, rank: 2)
        let coalesced = SequencedUpdate(sequence: 7, changes: BoardChanges(board: key, members: [aliceEntry, bobEntry]))
        feed.deliver([(partition: 0, update: coalesced), (partition: 0, update: update(8, board: "b", user: "bob"))])
        #expect(watcher.takeNow() == .items([.update(coalesced), .update(update(8, board: "b", user: "bob"))]))
        #expect(alice.takeNow() == .items([.update(SequencedUpdate(sequence: 7, changes: BoardChanges(board: key, members: [aliceEntry])))]))
        #expect(bob.takeNow() == .items([
            .update(SequencedUpdate(sequence: 7, changes: BoardChanges(board: key, members: [bobEntry]))), .update(update(8, board: "b", user: "bob")),
        ]))
        #expect(carol.takeNow() == nil)
        // One sequence per message in the history too: resuming after 7 gives only 8.
        #expect(feed.subscribe(SubscriberBuffer(limit: 10), to: stream("b"), since: 7) == .resume([update(8, board: "b", user: "bob")]))
    }

    /// Bad input: 5,000 subscribers on 5,000 streams, then one disconnects. Before, a disconnect walked every
    /// stream's and user's subscriber list; now it visits only its own registrations.
    @Test func aDisconnectCostsItsOwnSubscriptionsOnly() {
        let feed = makeFeed()
        let others = (0..<5_000).map { _ in SubscriberBuffer(limit: 10) }
        for (index, other) in others.enumerated() {
            _ = feed.subscribe(other, to: stream("b\(index)"), since: nil)
            feed.subscribe(other, toUser: "user\(index)")
        }
        let leaving = SubscriberBuffer(limit: 10)
        _ = feed.subscribe(leaving, to: stream("b1"), since: nil)
        _ = feed.subscribe(leaving, to: stream("b2"), since: nil)
        feed.subscribe(leaving, toUser: "me")
        let before = feed.state.withLock { $0.unsubscribeVisits }
        feed.unsubscribe(leaving)
        #expect(feed.state.withLock { $0.unsubscribeVisits } - before == 3)

        // The others still get their updates; the one that left does not.
        feed.deliver([(partition: 0, update: update(7, board: "b1", user: "me"))])
        #expect(others[1].takeNow() == .items([.update(update(7, board: "b1", user: "me"))]))
        #expect(leaving.takeNow() == nil)
        #expect(feed.streamCount(of: leaving) == 0)
    }

    @Test func unsubscribingFromOneStreamKeepsTheOthers() {
        let feed = makeFeed()
        let buffer = SubscriberBuffer(limit: 10)
        _ = feed.subscribe(buffer, to: stream("a"), since: nil)
        _ = feed.subscribe(buffer, to: stream("b"), since: nil)
        feed.unsubscribe(buffer, from: stream("a"))
        #expect(feed.streamCount(of: buffer) == 1)
        feed.deliver([(partition: 0, update: update(1, board: "a")), (partition: 0, update: update(2, board: "b"))])
        #expect(buffer.takeNow() == .items([.update(update(2, board: "b"))]))
    }

    /// Bad input: updates on 1,000 distinct boards with room for 100 histories. Before, every stream kept its
    /// history for ever; now the least recently updated lose theirs, and resuming on one gives a snapshot.
    @Test func historiesOfQuietStreamsAreEvicted() {
        let feed = makeFeed(historyPerStream: 10, maximumStreamsWithHistory: 100)
        for index in 0..<1_000 { feed.deliver([(partition: 0, update: update(Int64(index), board: "b\(index)"))]) }
        let count = feed.state.withLock { $0.histories.count }
        #expect(count <= 125)
        // The newest stream resumes from its history; the oldest has none left.
        #expect(feed.subscribe(SubscriberBuffer(limit: 10), to: stream("b999"), since: 998) == .resume([update(999, board: "b999")]))
        #expect(feed.subscribe(SubscriberBuffer(limit: 10), to: stream("b0"), since: 0) == .snapshot(sequence: -1))
    }

    /// A stream's history keeps at least `historyPerStream` updates and trims in steps.
    @Test func aStreamHistoryIsBounded() {
        let feed = makeFeed(historyPerStream: 10)
        for index in 0..<100 { feed.deliver([(partition: 0, update: update(Int64(index)))]) }
        let kept = feed.state.withLock { $0.histories["all-time:guild:b"]?.updates.count ?? 0 }
        #expect((10..<15).contains(kept))
        #expect(feed.subscribe(SubscriberBuffer(limit: 10), to: stream("b"), since: 92) == .resume((93..<100).map { update(Int64($0)) }))
        #expect(feed.subscribe(SubscriberBuffer(limit: 10), to: stream("b"), since: 50) == .snapshot(sequence: 99))
    }
}

/// Runs jobs on a queue of its own and records whether `probe` said "held" when a job was enqueued.
final class LockProbeExecutor: TaskExecutor, Sendable {
    let queue = DispatchQueue(label: "test.lock-probe")
    let probe: @Sendable () -> Bool
    let sawLockHeld = Atomic<Bool>(false)

    init(probe: @escaping @Sendable () -> Bool) { self.probe = probe }

    func enqueue(_ job: consuming ExecutorJob) {
        if probe() { sawLockHeld.store(true, ordering: .relaxed) }
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
