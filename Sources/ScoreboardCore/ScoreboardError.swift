/// The domain core's error: what rule was broken, and every reason found.
public struct ScoreboardError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { name }

        public static let invalidEvent = Code(name: "invalidEvent")
        public static let invalidDefinition = Code(name: "invalidDefinition")
        public static let invalidParameter = Code(name: "invalidParameter")
    }

    public var code: Code
    public var reasons: [String]

    public init(code: Code, reasons: [String]) {
        self.code = code
        self.reasons = reasons
    }

    public var description: String { "\(code): \(reasons.joined(separator: "; "))" }
}
