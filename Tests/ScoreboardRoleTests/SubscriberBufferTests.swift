import ScoreboardCore
@testable import ScoreboardPush
import Testing

struct SubscriberBufferTests {
    func update(_ sequence: Int64, user: String, total: Int64) -> SequencedUpdate {
        let board = BoardKey(window: .allTime, period: "all", dimension: .global, value: nil)
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
        let totals = items.compactMap { item -> (String, Int64)? in
            guard case .update(let update) = item else { return nil }
            return (update.update.userID, update.update.total)
        }
        #expect(totals.count <= 12)
        #expect(Dictionary(totals, uniquingKeysWith: max) == ["u0": 48, "u1": 49, "u2": 47])
        #expect(buffer.coalescedCount > 0)
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

    /// Bad input: a client that never reads while 6,000 distinct members keep scoring, so the queue stays above the
    /// coalescing threshold (5,000) and every append coalesces. Before, each append rescanned the whole queue
    /// (about 6,000 entries per update); now the work is a small constant per append.
    @Test func appendingToASlowClientCostsConstantWorkPerUpdate() {
        let buffer = SubscriberBuffer(limit: 10_000, coalesceThreshold: 5_000)
        let appends = 30_000
        for sequence in 0..<appends { buffer.append(update(Int64(sequence), user: "u\(sequence % 6_000)")) }
        #expect(buffer.entryVisits <= 3 * appends, "visited \(buffer.entryVisits) entries for \(appends) appends")
        guard case .items(let items) = buffer.takeNow() else { Issue.record("the client was dropped or got nothing"); return }
        // Coalesced to the newest total of each member, in sequence order.
        #expect(items.count == 6_000)
        #expect(items.map(\.order.0) == Array(Int64(appends - 6_000)..<Int64(appends)))
    }

    /// A resume's missed updates can land after a newer live one of the same member: the newer total wins.
    @Test func coalescingKeepsTheNewerTotalWhateverTheArrivalOrder() {
        let buffer = SubscriberBuffer(limit: 100, coalesceThreshold: 2)
        buffer.append(update(10, user: "a"))
        buffer.append(update(11, user: "b"))
        buffer.append(update(12, user: "c"))
        buffer.append([.update(update(5, user: "a"))])
        guard case .items(let items) = buffer.takeNow() else { Issue.record("nothing pending"); return }
        #expect(items.map(\.order.0) == [10, 11, 12])
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
