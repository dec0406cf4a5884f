/// Validates JSON values against the JSON Schema subset our topic schemas use.
///
/// Supported keywords: `type` (a name or a list), `properties`, `required`, `additionalProperties` (boolean),
/// `enum`, `const`, `minimum`, `maximum`, `minLength`, `maxLength`, `pattern`, `format` (`uuid`), `items`,
/// `minItems`, `maxItems`, `oneOf` (exactly one branch matches; when none does, the violations of the branch that came
/// closest are reported, so a bad value of a topic with two record kinds reads as before). An unknown keyword is a
/// schema error, so a schema never silently checks less than it says.
public struct JSONSchema: Sendable {
    public let document: JSONValue

    /// One reason a value does not match, with a JSON Pointer to where (`/points`).
    public struct Violation: Hashable, Sendable, CustomStringConvertible {
        public var pointer: String
        public var message: String
        public var description: String { "\(pointer.isEmpty ? "/" : pointer): \(message)" }

        public init(pointer: String, message: String) {
            self.pointer = pointer
            self.message = message
        }
    }

    public struct SchemaError: Error, Hashable, Sendable {
        public var pointer: String
        public var message: String
    }

    static let knownKeywords: Set<String> = [
        "$schema", "$id", "title", "description", "examples", "type", "properties", "required",
        "additionalProperties", "enum", "const", "minimum", "maximum", "minLength", "maxLength", "pattern", "format",
        "items", "minItems", "maxItems", "default", "oneOf",
    ]

    /// - Throws: ``SchemaError`` when the schema uses a keyword this validator does not implement, or a bad pattern.
    public init(_ document: JSONValue) throws(SchemaError) {
        self.document = document
        try Self.check(document, pointer: "")
    }

    private static func check(_ schema: JSONValue, pointer: String) throws(SchemaError) {
        guard let members = schema.objectValue else { throw SchemaError(pointer: pointer, message: "a schema is an object") }
        for key in members.keys where !knownKeywords.contains(key) {
            throw SchemaError(pointer: pointer, message: "unsupported keyword \(key)")
        }
        if let pattern = members["pattern"]?.stringValue {
            do { _ = try Regex(pattern) } catch { throw SchemaError(pointer: pointer, message: "bad pattern \(pattern)") }
        }
        if let properties = members["properties"]?.objectValue {
            for (name, sub) in properties { try check(sub, pointer: pointer + "/properties/" + name) }
        }
        if let items = members["items"] { try check(items, pointer: pointer + "/items") }
        if let branches = members["oneOf"] {
            guard let list = branches.arrayValue, !list.isEmpty else { throw SchemaError(pointer: pointer, message: "oneOf is a non-empty list") }
            for (index, branch) in list.enumerated() { try check(branch, pointer: pointer + "/oneOf/\(index)") }
        }
    }

    /// Every violation of the schema by `value`; empty when it matches.
    public func validate(_ value: JSONValue) -> [Violation] {
        var violations: [Violation] = []
        Self.validate(value, against: document, pointer: "", into: &violations)
        return violations
    }

    private static func validate(_ value: JSONValue, against schema: JSONValue, pointer: String, into violations: inout [Violation]) {
        func fail(_ message: String) { violations.append(Violation(pointer: pointer, message: message)) }

        if let branches = schema["oneOf"]?.arrayValue {
            let outcomes = branches.map { branch in
                var found: [Violation] = []
                validate(value, against: branch, pointer: pointer, into: &found)
                return found
            }
            switch outcomes.filter(\.isEmpty).count {
            case 1: break
            case 0: violations += outcomes.min { $0.count < $1.count } ?? []
            default: fail("must match exactly one of \(branches.count) schemas")
            }
        }

        if let type = schema["type"] {
            let allowed = Set(type.arrayValue?.compactMap(\.stringValue) ?? [type.stringValue].compactMap { $0 })
            if value.schemaTypes.isDisjoint(with: allowed) {
                fail("must be \(allowed.sorted().joined(separator: " or "))")
                return
            }
        }
        if let options = schema["enum"]?.arrayValue, !options.contains(value) {
            fail("must be one of \(options.compactMap(\.stringValue).joined(separator: ", "))")
        }
        if let constant = schema["const"], constant != value { fail("must be \(constant)") }
        if let number = value.numberValue {
            if let minimum = schema["minimum"]?.numberValue, number < minimum { fail("must be at least \(formatted(minimum))") }
            if let maximum = schema["maximum"]?.numberValue, number > maximum { fail("must be at most \(formatted(maximum))") }
        }
        if let text = value.stringValue {
            let length = text.count
            if let minimum = schema["minLength"]?.integerValue, length < minimum { fail("must have at least \(minimum) characters") }
            if let maximum = schema["maxLength"]?.integerValue, length > maximum { fail("must have at most \(maximum) characters") }
            if let pattern = schema["pattern"]?.stringValue, !Self.matches(text, pattern: pattern) { fail("must match \(pattern)") }
            if schema["format"]?.stringValue == "uuid", !UUIDText.isValid(text) { fail("must be a UUID") }
        }
        if let items = value.arrayValue {
            if let minimum = schema["minItems"]?.integerValue, items.count < minimum { fail("must have at least \(minimum) items") }
            if let maximum = schema["maxItems"]?.integerValue, items.count > maximum { fail("must have at most \(maximum) items") }
            if let itemSchema = schema["items"] {
                for (index, item) in items.enumerated() {
                    validate(item, against: itemSchema, pointer: pointer + "/\(index)", into: &violations)
                }
            }
        }
        if let members = value.objectValue {
            let properties = schema["properties"]?.objectValue ?? [:]
            for name in schema["required"]?.arrayValue?.compactMap(\.stringValue) ?? [] where members[name] == nil {
                violations.append(Violation(pointer: pointer + "/" + Self.escape(name), message: "is required"))
            }
            if schema["additionalProperties"] == .bool(false) {
                for name in members.keys.sorted() where properties[name] == nil {
                    violations.append(Violation(pointer: pointer + "/" + Self.escape(name), message: "is not allowed"))
                }
            }
            for (name, member) in members.sorted(by: { $0.key < $1.key }) {
                if let propertySchema = properties[name] {
                    validate(member, against: propertySchema, pointer: pointer + "/" + Self.escape(name), into: &violations)
                }
            }
        }
    }

    /// A member name as a JSON Pointer token (RFC 6901): `~` and `/` escaped, so a name such as `events/3` cannot
    /// pass for the path of an array element.
    static func escape(_ name: String) -> String {
        // Almost every name needs no escape, and this runs for every member of every validated item: the
        // replacements (string searches) were 8 % of the gateway's CPU on batch ingest.
        guard name.utf8.contains(where: { $0 == UInt8(ascii: "~") || $0 == UInt8(ascii: "/") }) else { return name }
        return name.replacing("~", with: "~0").replacing("/", with: "~1")
    }

    private static func formatted(_ number: Double) -> String {
        number.rounded() == number && abs(number) < 9e15 ? String(Int64(number)) : String(number)
    }
}

/// RFC 4122 textual UUIDs, checked without Foundation.
public enum UUIDText {
    /// 16 bytes as a lowercase `8-4-4-4-12` UUID, written digit by digit: `String(format:)` per byte was a fifth of
    /// the gateway's CPU on batch ingest (its event ids).
    public static func spell(_ bytes: [UInt8]) -> String {
        precondition(bytes.count == 16)
        let digits: StaticString = "0123456789abcdef"
        return String(unsafeUninitializedCapacity: 36) { text in
            digits.withUTF8Buffer { digits in
                var at = 0
                for (index, byte) in bytes.enumerated() {
                    if index == 4 || index == 6 || index == 8 || index == 10 {
                        text[at] = UInt8(ascii: "-")
                        at += 1
                    }
                    text[at] = digits[Int(byte >> 4)]
                    text[at + 1] = digits[Int(byte & 0x0F)]
                    at += 2
                }
                return at
            }
        }
    }

    /// `8-4-4-4-12` hexadecimal digits, either case.
    public static func isValid(_ text: String) -> Bool {
        let utf8 = Array(text.utf8)
        guard utf8.count == 36 else { return false }
        for (index, byte) in utf8.enumerated() {
            if [8, 13, 18, 23].contains(index) {
                guard byte == UInt8(ascii: "-") else { return false }
            } else {
                let isHex = (48...57).contains(byte) || (65...70).contains(byte) || (97...102).contains(byte)
                guard isHex else { return false }
            }
        }
        return true
    }
}

extension JSONSchema {
    /// Whether `text` matches `pattern` as JSON Schema means it (a search, so anchors matter). The anchored character
    /// classes our schemas use (`^[A-Za-z0-9_.-]+$`) are checked by a scan: compiling a `Regex` for every validated
    /// string was a third of the gateway's CPU on 1,000-item batches (perf, release build). Anything else compiles.
    static func matches(_ text: String, pattern: String) -> Bool {
        if let characterClass = AnchoredCharacterClass(pattern) { return characterClass.matches(text) }
        guard let regex = try? Regex(pattern) else { return false }
        return (try? regex.firstMatch(in: text)) != nil
    }
}

/// `^[…]+$` or `^[…]*$` with literal characters and ranges only (no negation, escapes or classes like `\d`): the
/// whole string made of the class's characters.
struct AnchoredCharacterClass: Equatable {
    var ranges: [ClosedRange<Unicode.Scalar>]
    var allowsEmpty: Bool

    init?(_ pattern: String) {
        let scalars = Array(pattern.unicodeScalars)
        guard scalars.count >= 6, scalars[0] == "^", scalars[1] == "[", scalars[scalars.count - 1] == "$",
              scalars[scalars.count - 3] == "]", scalars[scalars.count - 2] == "+" || scalars[scalars.count - 2] == "*"
        else { return nil }
        let body = scalars[2..<(scalars.count - 3)]
        guard !body.isEmpty, body.first != "^", !body.contains("\\"), !body.contains("["), !body.contains("]") else { return nil }
        var ranges: [ClosedRange<Unicode.Scalar>] = []
        var index = body.startIndex
        while index < body.endIndex {
            let low = body[index]
            // `a-z` is a range; a `-` first or last is itself.
            if index + 2 < body.endIndex, body[index + 1] == "-" {
                let high = body[index + 2]
                guard low <= high else { return nil }
                ranges.append(low...high)
                index += 3
            } else {
                ranges.append(low...low)
                index += 1
            }
        }
        self.ranges = ranges
        allowsEmpty = scalars[scalars.count - 2] == "*"
    }

    func matches(_ text: String) -> Bool {
        var isEmpty = true
        for scalar in text.unicodeScalars {
            isEmpty = false
            guard ranges.contains(where: { $0.contains(scalar) }) else { return false }
        }
        return allowsEmpty || !isEmpty
    }
}

