import ScoreboardCore
import Testing

/// The HyperLogLog sketch behind approximate distinct counts: its estimate within three of its stated standard errors
/// (1.04/√m) from a thousand to a million distinct ids, merging as a union, and a hash that is the same everywhere.
struct HyperLogLogTests {
    /// `count` distinct user ids of one seed (ids as the gateway accepts them).
    static func ids(_ count: Int, seed: Int) -> [String] { (0..<count).map { "user-\(seed)-\($0)" } }

    /// Seeded ids, each inserted twice: the estimate is within 3 standard errors of the true count at every scale,
    /// including the small range (where classic HyperLogLog needs linear counting) and the range after it.
    @Test(arguments: [1_000, 10_000, 50_000, 100_000, 1_000_000])
    func theEstimateIsWithinThreeStandardErrors(distinct: Int) {
        var sketch = HyperLogLog()
        for id in Self.ids(distinct, seed: distinct) {
            sketch.insert(id)
            sketch.insert(id)
        }
        let error = abs(sketch.estimate - Double(distinct)) / Double(distinct)
        #expect(sketch.relativeStandardError == 1.04 / 128)
        #expect(error <= 3 * sketch.relativeStandardError, "estimate \(sketch.estimate) for \(distinct)")
    }

    @Test func anEmptySketchCountsNothingAndOneItemCountsOne() {
        #expect(HyperLogLog().estimate == 0)
        var one = HyperLogLog()
        one.insert("ann")
        #expect(one.estimate.rounded() == 1)
    }

    /// Two overlapping sets' sketches, merged, are the sketch of their union (register for register), whichever is
    /// merged into which; merging a sketch into itself changes nothing.
    @Test func mergeIsTheUnion() {
        let first = Self.ids(30_000, seed: 1)
        let second = Array(Self.ids(30_000, seed: 1).suffix(10_000)) + Self.ids(20_000, seed: 2)
        var a = HyperLogLog(), b = HyperLogLog(), union = HyperLogLog()
        for id in first { a.insert(id); union.insert(id) }
        for id in second { b.insert(id); union.insert(id) }
        var ab = a
        ab.merge(b)
        var ba = b
        ba.merge(a)
        #expect(ab == union && ba == union)
        var again = ab
        again.merge(ab)
        #expect(again == ab)
        #expect(abs(union.estimate - 50_000) <= 3 * union.relativeStandardError * 50_000)
    }

    /// The hash is FNV-1a with MurmurHash3's fmix64 finaliser: these values (computed independently, in Python, from
    /// the two published algorithms) are what every process on every machine computes; a per-process seed, as Swift's
    /// Hasher has, would make a sketch written by one worker meaningless to the next.
    @Test func theHashIsStable() {
        #expect(HyperLogLog.stableHash("") == 0xefd0_1f60_ba99_2926)
        #expect(HyperLogLog.stableHash("user-1") == 0x41a2_fca5_c684_01c5)
        #expect(HyperLogLog.stableHash("user-1") != HyperLogLog.stableHash("user-2"))
    }

    /// The stored value: an exact set up to the limit, a sketch beyond; both read back as written, and anything else
    /// (an empty value, an unknown tag, registers of a wrong size) is refused.
    @Test func distinctCountsRoundTripAndSwitchPastTheLimit() throws {
        var count = DistinctCount.empty
        count.insert(["ann", "bob", "cy"], exactUpTo: 3)
        #expect(count == .exact(["ann", "bob", "cy"]) && count.count == 3 && !count.isApproximate)
        #expect(DistinctCount(encoded: count.encoded) == count)
        count.insert(["ann"], exactUpTo: 3)
        #expect(count.count == 3 && !count.isApproximate, "a member again")
        count.insert(["dee"], exactUpTo: 3)
        #expect(count.isApproximate && count.count == 4)
        #expect(count.encoded.count == (1 << 14) + 1)
        #expect(DistinctCount(encoded: count.encoded) == count)
        #expect(DistinctCount(encoded: DistinctCount.empty.encoded) == .empty)
        #expect(DistinctCount(encoded: []) == nil && DistinctCount(encoded: [9, 1, 2]) == nil && DistinctCount(encoded: [2, 0, 0, 0]) == nil)
    }
}
