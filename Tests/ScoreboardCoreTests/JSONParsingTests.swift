import ScoreboardCore
import Testing

struct JSONParsingTests {
    func parse(_ text: String) throws(JSONValue.ParseError) -> JSONValue { try JSONValue.parse(Array(text.utf8)) }

    @Test func documentsParseToTheirValues() throws {
        #expect(try parse(#" {"a": [1, -2, 3.5, 1e3, true, false, null], "b": {"c": "d"}} "#) == .object([
            "a": .array([.integer(1), .integer(-2), .number(3.5), .number(1000), .bool(true), .bool(false), .null]),
            "b": .object(["c": .string("d")]),
        ]))
        #expect(try parse(#""\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00""#) == .string("\"\\/\u{8}\u{c}\n\r\té😀"))
        #expect(try parse("9223372036854775807") == .integer(Int64.max))
        #expect(try parse("-9223372036854775808") == .integer(Int64.min))
        #expect(try parse("295159811261042816000") == .number(295159811261042816000))
        #expect(try parse("[]") == .array([]) && (try parse("{}")) == .object([:]))
    }

    @Test func malformedDocumentsAreRefused() {
        // Bad input: each a classic parser trap.
        for bad in ["", "[", "[1,]", "{\"a\"}", "{\"a\":1,}", "01", "1.", ".5", "+1", "1e", "\"\\x\"", "\"\\ud800\"", "\"a\u{01}\"", "tru",
                    "nul", "[1] 2", "{\"a\":1,\"a\":2}", "1e999", "\"\\u12\""] {
            #expect(throws: JSONValue.ParseError.self, "\(bad)") { try parse(bad) }
        }
        #expect(throws: JSONValue.ParseError.self) { try JSONValue.parse([0x22, 0xFF, 0x22]) }  // not UTF-8
    }

    @Test func nestingIsBoundedAndRefusedAsTooDeep() throws {
        let allowed = String(repeating: "[", count: 32) + String(repeating: "]", count: 32)
        _ = try parse(allowed)
        // Bad input: one level more, and a 3 KB body of nested arrays (which once cost seconds of CPU).
        for depth in [33, 1_500, 100_000] {
            let nested = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
            do {
                _ = try parse(nested)
                Issue.record("depth \(depth) parsed")
            } catch {
                #expect(error.reason == .tooDeep(limit: 32))
            }
        }
        let objects = String(repeating: #"{"a":"#, count: 40) + "1" + String(repeating: "}", count: 40)
        #expect(throws: JSONValue.ParseError.self) { try parse(objects) }
    }
}

struct IdentifierTests {
    @Test func identifiersAreLettersDigitsAndUnderscoreDotDash() {
        for good in ["alice", "A.b_c-9", String(repeating: "x", count: 64)] { #expect(ScoreEvent.identifierProblem(good) == nil, "\(good)") }
        // Bad input: ':' (the Redis key separator), first or inside; empty; too long; space; non-ASCII.
        for bad in [":alice", "alice:pvp-win:minute", "", String(repeating: "x", count: 65), "a b", "é"] {
            #expect(ScoreEvent.identifierProblem(bad) != nil, "\(bad)")
        }
    }

    @Test func theSchemaPatternSaysWhatTheCheckSays() throws {
        let schema = try JSONSchema(.object([
            "type": .string("string"), "minLength": .integer(1), "maxLength": .integer(64), "pattern": .string(ScoreEvent.identifierPattern),
        ]))
        for sample in ["alice", ":alice", "a:b", "", "0", "a b", "x.y-z_1", String(repeating: "x", count: 65), "é", "a/b"] {
            #expect(schema.validate(.string(sample)).isEmpty == (ScoreEvent.identifierProblem(sample) == nil), "\(sample)")
        }
    }

    @Test func aMemberNameCannotPassForAnArrayElementInAViolation() throws {
        let schema = try JSONSchema(.object(["type": .string("object"), "additionalProperties": .bool(false)]))
        // Bad input: a property named like the path of a batch item.
        #expect(schema.validate(.object(["events/3": .null])).map(\.pointer) == ["/events~13"])
    }
}
