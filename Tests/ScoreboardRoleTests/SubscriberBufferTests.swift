import ScoreboardCore
@testable import ScoreboardPush
import Testing

struct SubscriberBufferTests {
    let board = BoardKey(window: .allTime, period: "all", dimension: .global, value: nil)

    func update(_ sequence: Int64, user: String, total: Int64) -> SequencedUpdate {
        return SequencedUpdate(sequence: sequence, update: LeaderboardUpdate(board: board, userID: user, total: total, rank: nil))
    }

    @Test func aClientThatKeepsUpGetsEveryUpdateInOrder() {
        let buffer = SubscriberBuffer(limit: 100)
        for sequence in 0..<10 { buffer.append(update(Int64(sequence), user: "u\(sequence % 2)", total: Int64(sequence))) }
        guard case .items(let items) = buffer.takeNow() else { Issue.record("nothing pending"); return }
        #expect(items.count == 10)
        #expect(items.map(\.order.0) == Array(0..<10))
    }

    @Test func aSlowClientGetsCoalescedLatestTotals() {
        let buffer = SubscriberBuffer(limit: 100, coalesceThreshold: 10)
        for sequence in 0..<50 { buffer.append(update(Int64(sequence), user: "u\(sequence % 3)", total: Int64(sequence))) }
        guard case .items(let items) = buffer.takeNow() else { Issue.record("nothing pending"); return }
        // One board: one update at the newest sequence, with each member's newest total once.
        #expect(items == [.update(SequencedUpdate(sequence: 49, changes: BoardChanges(board: board, members: [
            .init(userID: "u2", total: 47, rank: nil), .init(userID: "u0", total: 48, rank: nil), .init(userID: "u1", total: 49, rank: nil),
        ])))])
        #expect(buffer.coalescedCount == 49)
    }

    /// Coalescing merges several members' updates of one board (schema version 2 messages) per board, keeps the
    /// boards apart, and never merges an update across a snapshot of the stream (the snapshot may be newer than the
    /// update before it, so that update must not be applied after it).
    @Test func coalescingMergesMembersPerBoardAndNotAcrossASnapshot() {
        let daily = BoardKey(window: .daily, period: "2026-11-25", dimension: .global, value: nil)
        func changes(_ sequence: Int64, _ key: BoardKey, _ members: [(String, Int64)]) -> OutboundItem {
            .update(SequencedUpdate(sequence: sequence, changes: BoardChanges(board: key, members: members.map { .init(userID: $0.0, total: $0.1, rank: nil) })))
        }
        let page = BoardPage(board: board.id, window: .allTime, period: "all", dimension: .global, value: nil, members: 0, entries: [], source: "live")
        let items = [
            changes(1, board, [("a", 1), ("b", 1)]), changes(2, daily, [("a", 1)]), changes(3, board, [("b", 2), ("c", 1)]),
            .snapshot(stream: "all-time:global", sequence: 4, page: page),
            changes(5, board, [("a", 5)]), changes(6, board, [("c", 7), ("a", 6)]),
        ]
        let (merged, mergedAway) = SubscriberBuffer.coalesce(items)
        #expect(mergedAway == 2)
        #expect(merged.map(\.order.0) == [2, 3, 4, 6])
        #expect(merged[1] == changes(3, board, [("a", 1), ("b", 2), ("c", 1)]))
        #expect(merged[2] == items[3])
        #expect(merged[3] == changes(6, board, [("c", 7), ("a", 6)]))
    }

    @Test func aClientTooFarBehindIsDroppedAndTheOthersAreNot() {
        let slow = SubscriberBuffer(limit: 20, coalesceThreshold: 10)
        let fast = SubscriberBuffer(limit: 20, coalesceThreshold: 10)
        for sequence in 0..<100 {
            let item = update(Int64(sequence), user: "u\(sequence)", total: 1)  // distinct members: nothing coalesces
            slow.append(item)
            fast.append(item)
            if case .items = fast.takeNow() {} else { Issue.record("the fast client stalled") }
        }
        #expect(slow.takeNow() == .overflowed)
    }

    @Test func heldDeliveryWaitsForTheSnapshot() {
        let buffer = SubscriberBuffer(limit: 100)
        buffer.hold()
        buffer.append(update(7, user: "a", total: 5))
        #expect(buffer.takeNow() == nil)
        let page = BoardPage(board: "all-time:all:global", window: .allTime, period: "all", dimension: .global, value: nil, members: 0, entries: [], source: "live")
        buffer.append([.snapshot(stream: "all-time:global", sequence: 6, page: page)])
        buffer.release()
        guard case .items(let items) = buffer.takeNow() else { Issue.record("nothing pending"); return }
        guard case .snapshot = items.first else { Issue.record("the snapshot must come first"); return }
        #expect(items.count == 2)
    }
}

/// The fan-out appends to every subscriber under the feed's lock, so appending must not cost O(queue).
struct SubscriberBufferCostTests {
    func update(_ sequence: Int64, user: String) -> SequencedUpdate {
        let board = BoardKey(window: .allTime, period: "all", dimension: .global, value: nil)
        return SequencedUpdate(sequence: sequence, update: LeaderboardUpdate(board: board, userID: user, total: sequence, rank: nil))
    }

    /// Bad input: a client that never reads while 6,000 distinct members keep scoring, far past the coalescing
    /// threshold. Before, each append under the feed's lock rescanned the whole queue (about 6,000 entries per
    /// update); now an append is one step, and the coalescing is the reader's, outside the lock.
    @Test func appendingToASlowClientCostsConstantWorkPerUpdate() {
        let buffer = SubscriberBuffer(limit: 50_000, coalesceThreshold: 5_000)
        let appends = 30_000
        for sequence in 0..<appends { buffer.append(update(Int64(sequence), user: "u\(sequence % 6_000)")) }
        #expect(buffer.entryVisits <= 2 * appends, "visited \(buffer.entryVisits) entries for \(appends) appends")
        guard case .items(let items) = buffer.takeNow() else { Issue.record("the client was dropped or got nothing"); return }
        // Coalesced to one update with the newest total of each member.
        guard case .update(let merged) = items.first, items.count == 1 else { Issue.record("expected one merged update"); return }
        #expect(merged.sequence == Int64(appends - 1))
        #expect(merged.changes.members.map(\.total) == (appends - 6_000..<appends).map(Int64.init))
    }

    /// A resume's missed updates can land after a newer live one of the same member: the newer total wins.
    @Test func coalescingKeepsTheNewerTotalWhateverTheArrivalOrder() {
        let buffer = SubscriberBuffer(limit: 100, coalesceThreshold: 2)
        buffer.append(update(10, user: "a"))
        buffer.append(update(11, user: "b"))
        buffer.append(update(12, user: "c"))
        buffer.append([.update(update(5, user: "a"))])
        guard case .items(let items) = buffer.takeNow(), case .update(let merged) = items.first else { Issue.record("nothing pending"); return }
        #expect(items.count == 1)
        #expect(merged.sequence == 12)
        #expect(Dictionary(uniqueKeysWithValues: merged.changes.members.map { ($0.userID, $0.total) }) == ["a": 10, "b": 11, "c": 12])
    }

    @Test func aClosedStreamSaysWhy() {
        let buffer = SubscriberBuffer(limit: 10)
        buffer.append(update(1, user: "a"))
        buffer.close(.tokenRevoked)
        buffer.close(.shuttingDown)
        guard case .items = buffer.takeNow() else { Issue.record("pending items come first"); return }
        #expect(buffer.takeNow() == .closed(.tokenRevoked))
    }
}
