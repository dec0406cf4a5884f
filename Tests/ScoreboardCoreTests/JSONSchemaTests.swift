import Foundation
@testable import ScoreboardCore
import Testing

@Suite struct JSONSchemaTests {
    func schema(_ text: String) throws -> JSONSchema {
        try JSONSchema(JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)))
    }

    func value(_ text: String) throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
    }

    @Test func typesNumbersAndIntegers() throws {
        let integer = try schema(#"{"type":"integer","minimum":1,"maximum":10}"#)
        #expect(integer.validate(try value("5")) == [])
        #expect(integer.validate(try value("5.5")).map(\.message) == ["must be integer"])
        #expect(integer.validate(try value("0")).map(\.message) == ["must be at least 1"])
        #expect(integer.validate(try value("11")).map(\.message) == ["must be at most 10"])
        #expect(integer.validate(try value(#""5""#)).map(\.message) == ["must be integer"])
        let either = try schema(#"{"type":["string","null"]}"#)
        #expect(either.validate(.null) == [])
        #expect(either.validate(.integer(1)).count == 1)
    }

    @Test func stringsPatternsFormatsAndEnums() throws {
        let text = try schema(#"{"type":"string","minLength":2,"maxLength":4,"pattern":"^[a-z]+$"}"#)
        #expect(text.validate(.string("abc")) == [])
        #expect(text.validate(.string("a")).map(\.message) == ["must have at least 2 characters"])
        #expect(text.validate(.string("abcde")).map(\.message) == ["must have at most 4 characters"])
        #expect(text.validate(.string("AB")).map(\.message) == ["must match ^[a-z]+$"])
        let uuid = try schema(#"{"type":"string","format":"uuid"}"#)
        #expect(uuid.validate(.string("8B1F2A34-5C6D-4E7F-8A9B-0C1D2E3F4A5B")) == [])
        #expect(uuid.validate(.string("8b1f2a345c6d4e7f8a9b0c1d2e3f4a5b")).count == 1)
        let choice = try schema(#"{"enum":["player","game-server"]}"#)
        #expect(choice.validate(.string("admin")).count == 1)
    }

    @Test func arraysAndNestedPointers() throws {
        let list = try schema(#"{"type":"array","maxItems":2,"items":{"type":"object","required":["id"],"properties":{"id":{"type":"integer"}}}}"#)
        #expect(list.validate(try value(#"[{"id":1},{"id":2}]"#)) == [])
        let violations = list.validate(try value(#"[{"id":1},{"id":"x"},{}]"#))
        #expect(violations.contains(JSONSchema.Violation(pointer: "", message: "must have at most 2 items")))
        #expect(violations.contains(JSONSchema.Violation(pointer: "/1/id", message: "must be integer")))
        #expect(violations.contains(JSONSchema.Violation(pointer: "/2/id", message: "is required")))
    }

    @Test func memberNamesAreEscapedAsPointerTokensOnlyWhenTheyNeedIt() {
        #expect(JSONSchema.escape("userId") == "userId")
        #expect(JSONSchema.escape("a~b/c") == "a~0b~1c")
        #expect(JSONSchema.escape("~/") == "~0~1")
    }

    /// `oneOf`: exactly one branch. A value matching none gets the violations of the branch it came closest to (so a
    /// bad score event reads as before the topic had a second record kind); one matching two is refused too.
    @Test func oneOfAcceptsExactlyOneBranchAndReportsTheClosest() throws {
        let either = try schema(#"{"oneOf":[{"type":"object","additionalProperties":false,"required":["a"],"properties":{"a":{"type":"integer","maximum":5}}},{"type":"object","additionalProperties":false,"required":["kind","b"],"properties":{"kind":{"const":"b"},"b":{"type":"string"}}}]}"#)
        #expect(either.validate(try value(#"{"a":1}"#)) == [])
        #expect(either.validate(try value(#"{"kind":"b","b":"x"}"#)) == [])
        #expect(either.validate(try value(#"{"a":9}"#)) == [JSONSchema.Violation(pointer: "/a", message: "must be at most 5")])
        #expect(either.validate(try value(#"{"kind":"b"}"#)) == [JSONSchema.Violation(pointer: "/b", message: "is required")])
        let both = try schema(#"{"oneOf":[{"type":"integer"},{"minimum":0}]}"#)
        #expect(both.validate(try value("3")) == [JSONSchema.Violation(pointer: "", message: "must match exactly one of 2 schemas")])
        #expect(both.validate(try value("-3")) == [])
    }

    @Test func unsupportedKeywordIsASchemaError() throws {
        // A schema must never silently check less than it says: "anyOf" is not implemented, so it is refused.
        #expect(throws: JSONSchema.SchemaError.self) { try schema(#"{"anyOf":[{"type":"string"}]}"#) }
        #expect(throws: JSONSchema.SchemaError.self) { try schema(#"{"oneOf":[{"minimun":1}]}"#) }
        #expect(throws: JSONSchema.SchemaError.self) { try schema(#"{"oneOf":[]}"#) }
        #expect(throws: JSONSchema.SchemaError.self) { try schema(#"{"properties":{"a":{"minimun":1}}}"#) }
        #expect(throws: JSONSchema.SchemaError.self) { try schema(#"{"pattern":"(unclosed"}"#) }
    }
}

@Suite struct AnchoredCharacterClassTests {
    /// The scan agrees with Swift's Regex on the schemas' patterns, for strings of every kind of character.
    @Test func theScanAgreesWithRegex() throws {
        let alphabet = Array("aZ09_.-:/ é\n$^[]+\u{0}") + ["\u{1F600}"]
        var random = SystemRandomNumberGenerator()
        for pattern in ["^[A-Za-z0-9_.-]+$", "^[A-Za-z0-9_.:-]+$", "^[a-c]*$", "^[-x]+$"] {
            let characterClass = try #require(AnchoredCharacterClass(pattern), "\(pattern) should take the fast path")
            let regex = try Regex(pattern)
            for length in 0..<6 {
                for _ in 0..<300 {
                    let text = String((0..<length).map { _ in alphabet.randomElement(using: &random)! })
                    let expected = (try regex.firstMatch(in: text)) != nil
                    #expect(characterClass.matches(text) == expected, "\(pattern) on \(text.debugDescription)")
                }
            }
        }
    }

    /// Patterns it cannot scan go to Regex, and still match as JSON Schema says.
    @Test func otherPatternsCompile() {
        for pattern in ["^[^a]+$", "^[\\d]+$", "^a[b-c]+$", "[a-z]+", "^[z-a]+$", "^[]+$"] { #expect(AnchoredCharacterClass(pattern) == nil, "\(pattern)") }
        #expect(JSONSchema.matches("123", pattern: "^[\\d]+$"))
        #expect(!JSONSchema.matches("12a", pattern: "^[\\d]+$"))
        #expect(JSONSchema.matches("xabcx", pattern: "[a-c]+"))
    }
}
