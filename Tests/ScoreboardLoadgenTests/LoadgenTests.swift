import NIOCore
import Testing

@testable import ScoreboardLoadgen

@Suite struct ZipfTests {
    @Test func frequenciesFollowTheDistribution() {
        let zipf = ZipfDistribution(count: 1_000, exponent: 1.1)
        var random = SeededGenerator(seed: 42)
        var counts = [Int](repeating: 0, count: 1_000)
        let draws = 200_000
        for _ in 0..<draws { counts[zipf.sample(using: &random)] += 1 }
        // The first ranks' observed shares are within 10% of their probabilities, and rank order holds at the top.
        for rank in 0..<5 {
            let observed = Double(counts[rank]) / Double(draws)
            #expect(abs(observed - zipf.probability(of: rank)) / zipf.probability(of: rank) < 0.1, "rank \(rank)")
        }
        #expect(counts[0] > counts[1] && counts[1] > counts[2])
        #expect(counts.allSatisfy { $0 >= 0 } && counts.reduce(0, +) == draws)
    }

    @Test func exponentZeroIsUniformAndSeedsRepeat() {
        let zipf = ZipfDistribution(count: 4, exponent: 0)
        for rank in 0..<4 { #expect(abs(zipf.probability(of: rank) - 0.25) < 1e-12) }
        var a = SeededGenerator(seed: 7), b = SeededGenerator(seed: 7), c = SeededGenerator(seed: 8)
        let first = (0..<50).map { _ in zipf.sample(using: &a) }
        #expect(first == (0..<50).map { _ in zipf.sample(using: &b) })
        #expect(first != (0..<50).map { _ in zipf.sample(using: &c) })
    }
}

@Suite struct ServerSentEventParserTests {
    @Test func eventsSplitAcrossChunksAreJoinedAndCommentsSkipped() {
        var parser = ServerSentEventParser()
        #expect(parser.feed(ByteBuffer(string: ": heartbeat\n\nid: 4\nevent: upd")).isEmpty)
        let events = parser.feed(ByteBuffer(string: "ate\ndata: {\"a\":1}\n\nid: 5\nevent: snapshot\ndata: {}\n\nid: 6\ndata: x"))
        #expect(events.count == 2)
        #expect(events[0].type == "update" && String(decoding: events[0].data, as: UTF8.self) == "{\"a\":1}")
        #expect(events[1].type == "snapshot")
        let last = parser.feed(ByteBuffer(string: "\ndata: y\n\n"))
        #expect(last.count == 1 && String(decoding: last[0].data, as: UTF8.self) == "x\ny")
    }

    @Test func memberTotalsAreFoundAtAnyDepth() throws {
        let one: [String: Any] = ["type": "update", "update": ["userId": "u1", "total": 30]]
        // An update frame as the push gateway sends it: one board's changes of a worker batch.
        let many: [String: Any] = [
            "type": "update", "stream": "all-time:global", "sequence": 12,
            "update": ["board": "all-time:all:global", "window": "all-time", "members": [["userId": "u1", "total": 5, "rank": 1], ["userId": "u2", "total": 7]]],
        ]
        #expect(SubscriberStream.memberTotals(in: one).map { "\($0.0)=\($0.1)" } == ["u1=30"])
        #expect(Set(SubscriberStream.memberTotals(in: many).map { "\($0.0)=\($0.1)" }) == ["u1=5", "u2=7"])
    }
}

@Suite struct EndToEndMatchingTests {
    @Test func anUpdateCoversEveryPromiseUpToItsTotal() {
        let ledger = AcceptedLedger()
        let latency = LatencyRecorder()
        let subscriber = SubscriberProgress(ledger: ledger, latency: latency)
        let start = ContinuousClock.now
        ledger.accepted(userID: "u", points: 10, at: start)
        ledger.accepted(userID: "u", points: 5, at: start + .milliseconds(1))
        ledger.accepted(userID: "v", points: 1, at: start)
        #expect(subscriber.unseen == 3)
        subscriber.saw(userID: "u", total: 10, at: start + .milliseconds(4))  // covers the first only
        #expect(subscriber.unseen == 2)
        subscriber.saw(userID: "u", total: 15, at: start + .milliseconds(9))
        #expect(subscriber.unseen == 1)
        let histogram = latency.snapshot
        #expect(histogram.totalCount == 2)
        #expect(histogram.valueAtPercentile(100) >= 7_990 && histogram.valueAtPercentile(100) <= 8_010)  // 9 ms − 1 ms, in µs
    }

    @Test func anUpdateBeforeTheAnswerCountsAsZeroAtOnce() {
        let ledger = AcceptedLedger()
        let latency = LatencyRecorder()
        let subscriber = SubscriberProgress(ledger: ledger, latency: latency)
        let start = ContinuousClock.now
        subscriber.saw(userID: "u", total: 3, at: start)  // the update overtook the 202
        ledger.accepted(userID: "u", points: 3, at: start + .milliseconds(2))
        #expect(subscriber.unseen == 0)
        #expect(latency.snapshot.totalCount == 1 && latency.snapshot.max == 0)
        // The player's next event is matched with its own update, not the earlier one's 202 (which would make the
        // earlier event look as slow as the time between the player's events).
        ledger.accepted(userID: "u", points: 4, at: start + .seconds(5))
        subscriber.saw(userID: "u", total: 7, at: start + .seconds(5) + .milliseconds(3))
        #expect(latency.snapshot.totalCount == 2 && latency.snapshot.max >= 2_990 && latency.snapshot.max <= 3_010)
    }
}

@Suite struct WorkQueueTests {
    @Test func eachItemGoesToExactlyOneTaker() async {
        let queue = WorkQueue<Int>()
        let taken = await withTaskGroup(of: [Int].self) { group in
            for _ in 0..<4 {
                group.addTask {
                    var mine: [Int] = []
                    while let item = await queue.take() { mine.append(item) }
                    return mine
                }
            }
            for item in 0..<1_000 { queue.put(item) }
            queue.finish()
            return await group.reduce(into: [Int]()) { $0 += $1 }
        }
        #expect(taken.sorted() == Array(0..<1_000))
    }
}

@Suite struct LoadTargetTests {
    @Test func parsesAddressesAndRefusesJunk() {
        #expect(LoadTarget("http://127.0.0.1:8080/") == LoadTarget(host: "127.0.0.1", port: 8080))
        #expect(LoadTarget("localhost:1") == LoadTarget(host: "localhost", port: 1))
        for junk in ["", "http://", "host", "host:0", "host:70000", ":80", "host:x"] { #expect(LoadTarget(junk) == nil, "\(junk)") }
    }
}
