/// Running mean and variance in one pass (Welford's algorithm): numerically stable where the textbook
/// `Σx² − (Σx)²/n` loses every digit to cancellation, and small enough (three numbers) to store per user.
public struct WelfordStatistics: Hashable, Sendable, Codable {
    public private(set) var count: Int
    public private(set) var mean: Double
    /// The sum of squared differences from the current mean.
    public private(set) var sumOfSquaredDeviations: Double

    public init() {
        count = 0
        mean = 0
        sumOfSquaredDeviations = 0
    }

    enum CodingKeys: String, CodingKey {
        case count = "n", mean, sumOfSquaredDeviations = "m2"
    }

    public mutating func add(_ value: Double) {
        count += 1
        let delta = value - mean
        mean += delta / Double(count)
        sumOfSquaredDeviations += delta * (value - mean)
    }

    /// Takes back a value added before (the population profile replaces a user's contribution as it moves).
    /// - Important: only values that were added may be removed; the result is then what adding the others gives.
    public mutating func remove(_ value: Double) {
        guard count > 1 else {
            self = WelfordStatistics()
            return
        }
        let previousMean = mean
        count -= 1
        mean = (previousMean * Double(count + 1) - value) / Double(count)
        sumOfSquaredDeviations -= (value - mean) * (value - previousMean)
        // Rounding may leave a tiny negative sum after many replacements; a variance is never negative.
        if sumOfSquaredDeviations < 0 { sumOfSquaredDeviations = 0 }
    }

    /// The sample variance (divided by n − 1); 0 below two values.
    public var variance: Double { count > 1 ? sumOfSquaredDeviations / Double(count - 1) : 0 }
    public var standardDeviation: Double { variance.squareRoot() }

    /// How many standard deviations `value` lies from the mean; `nil` with fewer than `minimumCount` values or no
    /// spread at all (a z-score of a constant history means nothing).
    public func zScore(of value: Double, minimumCount: Int) -> Double? {
        guard count >= max(2, minimumCount) else { return nil }
        let deviation = standardDeviation
        guard deviation > 1e-12 else { return nil }
        return (value - mean) / deviation
    }
}

/// `log` and `exp` for the pure core, which uses the standard library only (no Foundation, no libc).
enum FraudMath {
    static let ln2 = 0.693_147_180_559_945_3

    /// The natural logarithm of a positive number; `-infinity` for 0.
    static func naturalLog(_ x: Double) -> Double {
        precondition(x >= 0, "the logarithm of a negative number")
        if x == 0 { return -.infinity }
        if x.isInfinite { return .infinity }
        // x = m · 2^e with m in [1, 2); ln m = 2 atanh(s) with s = (m − 1)/(m + 1) ≤ 1/3, a fast series.
        let exponent = Double(x.exponent)
        let m = x.significand
        let s = (m - 1) / (m + 1)
        let s2 = s * s
        var term = s
        var sum = 0.0
        var k = 1.0
        while true {
            let next = sum + term / k
            if next == sum { break }
            sum = next
            term *= s2
            k += 2
        }
        return exponent * ln2 + 2 * sum
    }

    /// e^x.
    static func exponential(_ x: Double) -> Double {
        if x > 709 { return .infinity }
        if x < -745 { return 0 }
        // x = k ln 2 + r with |r| ≤ ln 2 / 2: e^x = 2^k e^r, and e^r's Taylor series converges in a few terms.
        let k = (x / ln2).rounded()
        let r = x - k * ln2
        var term = 1.0
        var sum = 1.0
        var n = 1.0
        while true {
            term *= r / n
            let next = sum + term
            if next == sum { break }
            sum = next
            n += 1
        }
        return sum * Double(sign: .plus, exponent: Int(k), significand: 1)
    }
}
