import ScoreboardCore

/// The load generator's seedable generator: the same seed gives the same traffic, run after run.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var generator: SplitMix64

    public init(seed: UInt64) { generator = SplitMix64(state: seed) }

    public mutating func next() -> UInt64 { generator.next() }
}

/// Ranks 0..<count drawn with probability proportional to 1 / (rank + 1)^exponent: a few users play a lot, most
/// play a little, as in real games. Sampling is a binary search over the precomputed cumulative weights.
public struct ZipfDistribution: Sendable {
    public let count: Int
    public let exponent: Double
    private let cumulative: [Double]

    public init(count: Int, exponent: Double) {
        precondition(count > 0, "a Zipf distribution needs at least one rank")
        precondition(exponent >= 0, "a Zipf exponent is not negative")
        self.count = count
        self.exponent = exponent
        guard exponent > 0 else {
            // Uniform: no table (a benchmark may spread its events over millions of players).
            cumulative = []
            return
        }
        var running = 0.0
        var cumulative: [Double] = []
        cumulative.reserveCapacity(count)
        for rank in 1...count {
            running += 1 / pow(Double(rank), exponent)
            cumulative.append(running)
        }
        self.cumulative = cumulative.map { $0 / running }
    }

    /// The probability of `rank`.
    public func probability(of rank: Int) -> Double {
        if cumulative.isEmpty { return 1 / Double(count) }
        return rank == 0 ? cumulative[0] : cumulative[rank] - cumulative[rank - 1]
    }

    public func sample(using generator: inout some RandomNumberGenerator) -> Int {
        if cumulative.isEmpty { return Int.random(in: 0..<count, using: &generator) }
        let u = Double.random(in: 0..<1, using: &generator)
        var low = 0, high = count - 1
        while low < high {
            let middle = (low + high) / 2
            if cumulative[middle] > u { high = middle } else { low = middle + 1 }
        }
        return low
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
