import ScoreboardCore
import Testing

struct BatchSizerTests {
    @Test func startsSmallAndGrowsAtMostTwofoldPerFullFastBatchUpToTheMaximum() {
        var sizer = BatchSizer(minimum: 50, initial: 250, maximum: 5_000, target: .seconds(1))
        #expect(sizer.limit == 250)
        // 250 events in 10 ms: 25,000 events/s would fit 25,000 in a second, but growth is at most twofold.
        sizer.record(events: 250, elapsed: .milliseconds(10))
        #expect(sizer.limit == 500)
        for _ in 0..<10 { sizer.record(events: sizer.limit, elapsed: .milliseconds(10)) }
        #expect(sizer.limit == 5_000)
    }

    @Test func shrinksToWhatFitsTheTargetWhenBatchesAreSlow() {
        var sizer = BatchSizer(minimum: 50, initial: 4_000, maximum: 5_000, target: .seconds(1))
        // 4,000 events took 8 s (a loaded machine): 500 fit in a second.
        sizer.record(events: 4_000, elapsed: .seconds(8))
        #expect(sizer.limit == 500)
        // Never below the minimum, however slow.
        sizer.record(events: 500, elapsed: .seconds(60))
        #expect(sizer.limit == 50)
    }

    @Test func aBatchTheQueueCouldNotFillDoesNotGrowTheLimit() {
        var sizer = BatchSizer(minimum: 10, initial: 1_000, maximum: 5_000, target: .seconds(1))
        // Idle: 3 events, very fast. Nothing learnt about 1,000.
        sizer.record(events: 3, elapsed: .milliseconds(1))
        #expect(sizer.limit == 1_000)
        // But a small batch that was slow still shrinks it.
        sizer.record(events: 200, elapsed: .seconds(2))
        #expect(sizer.limit == 100)
    }

    @Test func anAssignmentStartsSmallAgainAndEmptyBatchesChangeNothing() {
        var sizer = BatchSizer(maximum: 5_000)
        for _ in 0..<6 { sizer.record(events: sizer.limit, elapsed: .milliseconds(5)) }
        #expect(sizer.limit > sizer.initial)
        sizer.restart()
        #expect(sizer.limit == sizer.initial)
        sizer.record(events: 0, elapsed: .seconds(100))
        #expect(sizer.limit == sizer.initial)
    }
}
