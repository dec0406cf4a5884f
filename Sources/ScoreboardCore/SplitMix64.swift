/// A small, fast, seedable generator (SplitMix64): the same seed gives the same sequence on every machine, run after
/// run, so generated traffic and randomised tests can be replayed. Not for secrets.
public struct SplitMix64: RandomNumberGenerator, Sendable, Hashable {
    public private(set) var state: UInt64

    /// Starts at `state` as it is (`SplitMix64(state: seed)` is the reference algorithm seeded with `seed`).
    public init(state: UInt64) { self.state = state }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
