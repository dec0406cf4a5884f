import Foundation

/// A HyperLogLog sketch (Flajolet et al. 2007): an estimate of how many distinct items were inserted, in a fixed
/// 2^precision bytes however many they are, with a relative standard error of 1.04/√m (m = 2^precision registers:
/// 0.81 % at the default precision 14, 16 KiB). Two sketches of the same precision merge into the sketch of the union
/// (the larger register wins), so inserting is idempotent and the order of inserts does not matter.
///
/// Items are hashed with ``stableHash(_:)``, the same 64 bits in every process and on every machine (Swift's `Hasher`
/// is seeded per process, so a sketch written by one worker would mean nothing to the next). The estimate is Ertl's
/// improved estimator ("New cardinality estimation algorithms for HyperLogLog sketches", 2017, algorithm 6): it uses
/// the whole histogram of register values, which makes the small-range correction (where classic HyperLogLog switches
/// to linear counting) and the range in between part of one formula, without the empirical bias tables of HLL++.
public struct HyperLogLog: Sendable, Hashable {
    /// log2 of the number of registers (4...18).
    public let precision: Int
    /// One rank per register: the position of the first 1-bit of the hashes that fell into it, at most 64 - p + 1.
    public private(set) var registers: [UInt8]

    public static let defaultPrecision = 14

    public init(precision: Int = HyperLogLog.defaultPrecision) {
        precondition((4...18).contains(precision), "HyperLogLog precision out of 4...18")
        self.precision = precision
        registers = [UInt8](repeating: 0, count: 1 << precision)
    }

    /// A sketch of these registers (`nil` unless their count is a power of two in 2^4...2^18 and each rank possible).
    public init?(registers: [UInt8]) {
        let precision = registers.count.trailingZeroBitCount
        guard registers.count == 1 << precision, (4...18).contains(precision), registers.allSatisfy({ Int($0) <= 65 - precision }) else {
            return nil
        }
        self.precision = precision
        self.registers = registers
    }

    /// The relative standard error of the estimate, 1.04/√m.
    public static func relativeStandardError(precision: Int) -> Double { 1.04 / Double(1 << precision).squareRoot() }

    public var relativeStandardError: Double { Self.relativeStandardError(precision: precision) }

    public mutating func insert(_ item: String) { insert(hash: Self.stableHash(item)) }

    public mutating func insert(hash: UInt64) {
        let index = Int(hash >> UInt64(64 - precision))
        // The rank of the remaining 64 - p bits: leading zeros + 1, with a sentinel bit so that all-zero bits give
        // 64 - p + 1 rather than 65.
        let rest = (hash << UInt64(precision)) | (1 << UInt64(precision - 1))
        let rank = UInt8(rest.leadingZeroBitCount + 1)
        if rank > registers[index] { registers[index] = rank }
    }

    /// Makes this the sketch of the union: the larger rank of each register.
    public mutating func merge(_ other: HyperLogLog) {
        precondition(other.precision == precision, "merging HyperLogLog sketches of different precisions")
        for index in registers.indices where other.registers[index] > registers[index] { registers[index] = other.registers[index] }
    }

    /// The estimated number of distinct items inserted.
    public var estimate: Double {
        let m = Double(registers.count)
        let q = 64 - precision
        var histogram = [Double](repeating: 0, count: q + 2)
        for rank in registers { histogram[Int(rank)] += 1 }
        var z = m * Self.tau(1 - histogram[q + 1] / m)
        for k in stride(from: q, through: 1, by: -1) {
            z = 0.5 * (z + histogram[k])
        }
        z += m * Self.sigma(histogram[0] / m)
        // α∞ = 1 / (2 ln 2)
        return 0.5 / log(2.0) * m * m / z
    }

    /// Ertl's σ(x) = x + Σ_{k≥1} x^(2^k) 2^(k-1): the correction for empty registers.
    static func sigma(_ x: Double) -> Double {
        guard x < 1 else { return .infinity }
        var x = x
        var y = 1.0
        var z = x
        while true {
            x *= x
            let previous = z
            z += x * y
            y += y
            if z == previous { return z }
        }
    }

    /// Ertl's τ(x): the correction for registers at the largest rank.
    static func tau(_ x: Double) -> Double {
        guard x > 0, x < 1 else { return 0 }
        var x = x
        var y = 1.0
        var z = 1 - x
        while true {
            x = x.squareRoot()
            let previous = z
            y *= 0.5
            z -= (1 - x) * (1 - x) * y
            if z == previous { return z / 3 }
        }
    }

    /// A 64-bit hash of the UTF-8 bytes, the same in every process: FNV-1a, then the 64-bit finaliser of MurmurHash3
    /// (fmix64) so that every input bit reaches the top bits, which choose the register.
    public static func stableHash(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        hash ^= hash >> 33
        hash = hash &* 0xff51_afd7_ed55_8ccd
        hash ^= hash >> 33
        hash = hash &* 0xc4ce_b9fe_1a85_ec53
        hash ^= hash >> 33
        return hash
    }
}

/// One distinct count as a worker keeps it, in one stage-state value per cell: the members themselves while there are
/// at most `exactUpTo` of them (the count is exact), a ``HyperLogLog`` sketch once there are more (the count is an
/// estimate, and the value stays 16 KiB however many join). Adding members is idempotent, so a cell replaced under
/// its row lock by every batch that brings members stays the count of all of them.
public enum DistinctCount: Sendable, Hashable {
    case exact(Set<String>)
    case sketch(HyperLogLog)

    public static let empty = DistinctCount.exact([])

    public var isApproximate: Bool {
        if case .sketch = self { return true }
        return false
    }

    /// The count: exact, or the sketch's estimate rounded.
    public var count: Int64 {
        switch self {
        case .exact(let members): Int64(members.count)
        case .sketch(let sketch): Int64(sketch.estimate.rounded())
        }
    }

    /// Adds members; a set that grows past `exactUpTo` becomes a sketch of all of them.
    public mutating func insert(_ members: some Sequence<String>, exactUpTo: Int) {
        switch self {
        case .exact(var set):
            set.formUnion(members)
            if set.count > exactUpTo {
                var sketch = HyperLogLog()
                for member in set { sketch.insert(member) }
                self = .sketch(sketch)
            } else {
                self = .exact(set)
            }
        case .sketch(var sketch):
            for member in members { sketch.insert(member) }
            self = .sketch(sketch)
        }
    }

    // MARK: - Encoding

    /// The first byte of an encoded exact set: then the members, sorted, joined by newlines (identifiers have no
    /// newline), which migration 0011 also writes from SQL.
    static let exactTag: UInt8 = 1
    /// The first byte of an encoded sketch: then its registers.
    static let sketchTag: UInt8 = 2

    /// The stage-state value.
    public var encoded: [UInt8] {
        switch self {
        case .exact(let members):
            return [Self.exactTag] + Array(members.sorted().joined(separator: "\n").utf8)
        case .sketch(let sketch):
            return [Self.sketchTag] + sketch.registers
        }
    }

    /// Reads a value written by ``encoded``; `nil` for anything else.
    public init?(encoded bytes: [UInt8]) {
        guard let tag = bytes.first else { return nil }
        let body = bytes.dropFirst()
        switch tag {
        case Self.exactTag:
            self = .exact(body.isEmpty ? [] : Set(body.split(separator: UInt8(ascii: "\n")).map { String(decoding: $0, as: UTF8.self) }))
        case Self.sketchTag:
            guard let sketch = HyperLogLog(registers: Array(body)) else { return nil }
            self = .sketch(sketch)
        default:
            return nil
        }
    }
}
