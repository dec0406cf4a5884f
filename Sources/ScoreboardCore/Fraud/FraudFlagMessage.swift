/// A fraud flag as the workers store it (a stage record) and publish it (the fraud-flags topic,
/// `topics/fraud-flags.yaml`), and as reviewers read it: the detector's ``FraudFlag`` with a stable id.
///
/// The id is derived from the flag's identity (user, rule, and the event or rejection that made it fire), never drawn
/// at random: a batch replayed after a crash raises the same flag with the same id, which the append-once record and
/// every reader recognise.
public struct FraudFlagMessage: Hashable, Sendable, Codable {
    public var schemaVersion: Int = 1
    public var flagID: String
    public var userID: String
    public var ruleID: String
    public var severity: FraudSeverity
    public var outcome: FraudOutcome
    /// Event time, milliseconds since the epoch.
    public var detectedAt: Int64
    public var triggeredBy: String
    public var evidence: [String: Double]
    public var detail: String

    enum CodingKeys: String, CodingKey {
        case schemaVersion, flagID = "flagId", userID = "userId", ruleID = "rule", severity, outcome, detectedAt, triggeredBy, evidence, detail
    }

    public init(
        userID: String, ruleID: String, severity: FraudSeverity, outcome: FraudOutcome, detectedAt: Int64, triggeredBy: String,
        evidence: [String: Double], detail: String
    ) {
        flagID = Self.flagID(userID: userID, ruleID: ruleID, triggeredBy: triggeredBy)
        self.userID = userID
        self.ruleID = ruleID
        self.severity = severity
        self.outcome = outcome
        self.detectedAt = detectedAt
        self.triggeredBy = triggeredBy
        self.evidence = evidence
        // The topic's schema bounds the detail.
        self.detail = String(detail.prefix(1000))
    }

    public init(_ flag: FraudFlag) {
        self.init(
            userID: flag.userID, ruleID: flag.ruleID, severity: flag.severity, outcome: flag.outcome, detectedAt: flag.detectedAt.millisecondsSinceEpoch,
            triggeredBy: flag.triggeredBy, evidence: flag.evidence, detail: flag.detail)
    }

    /// A UUID (version 8) from two 64-bit FNV-1a hashes of the identity: deterministic across processes and
    /// restarts (Swift's `Hasher` is seeded per process), and the core has no cryptographic hash. Not a secret:
    /// nobody gains anything by predicting a flag's id.
    public static func flagID(userID: String, ruleID: String, triggeredBy: String) -> String {
        let bytes = Array("\(userID)\n\(ruleID)\n\(triggeredBy)".utf8)
        func fnv1a(_ basis: UInt64) -> UInt64 {
            var hash = basis
            for byte in bytes {
                hash ^= UInt64(byte)
                hash = hash &* 0x0000_0100_0000_01B3
            }
            return hash
        }
        var high = fnv1a(0xCBF2_9CE4_8422_2325)
        var low = fnv1a(0x6C62_272E_07BB_0142)
        high = (high & ~0x0000_0000_0000_F000) | 0x0000_0000_0000_8000  // version 8
        low = (low & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000  // RFC 9562 variant
        // Big-endian: the high word's digits first, as the UUID's text reads.
        return UUIDText.spell((0..<8).map { UInt8(truncatingIfNeeded: high >> (56 - 8 * $0)) } + (0..<8).map { UInt8(truncatingIfNeeded: low >> (56 - 8 * $0)) })
    }
}
