import ScoreboardCore
import ScoreboardPush
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
