import Foundation
import ScoreboardCore
import ScoreboardDefinitions
import Testing

/// The repository's `topics/` folder, found from this file's location.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

func validEvent() -> ScoreEvent {
    ScoreEvent(
        eventID: "8b1f2a34-5c6d-4e7f-8a9b-0c1d2e3f4a5b", userID: "user-42", action: "complete-quest", points: 10,
        occurredAt: Timestamp(millisecondsSinceEpoch: 1_795_000_000_000), region: "eu", guild: "guild-7",
        idempotencyKey: "0f9e8d7c-6b5a-4948-8372-615049382716", source: .player)
}

func json(_ event: ScoreEvent) throws -> JSONValue {
    try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(event))
}

@Suite struct ScoreEventTests {
    @Test func validEventPassesValidation() throws {
        try validEvent().validate()
    }

    /// Each bad input tried, and the field the error must name.
    static let badEvents: [(String, @Sendable (inout ScoreEvent) -> Void, String)] = [
        ("empty user id", { $0.userID = "" }, "userId"),
        ("user id with a space", { $0.userID = "user 42" }, "userId"),
        ("65-character user id", { $0.userID = String(repeating: "u", count: 65) }, "userId"),
        ("action with a slash", { $0.action = "quest/complete" }, "action"),
        ("negative points", { $0.points = -5 }, "points"),
        ("points over the maximum", { $0.points = 1_000_001 }, "points"),
        ("event id that is not a UUID", { $0.eventID = "not-a-uuid" }, "eventId"),
        ("idempotency key with a bad digit", { $0.idempotencyKey = "0f9e8d7c-6b5a-4948-8372-61504938271g" }, "idempotencyKey"),
        ("time before 2020", { $0.occurredAt = Timestamp(millisecondsSinceEpoch: 0) }, "occurredAt"),
        ("empty region", { $0.region = "" }, "region"),
        ("guild with unicode", { $0.guild = "gilde-ä" }, "guild"),
        ("unknown schema version", { $0.schemaVersion = 2 }, "schemaVersion"),
    ]

    @Test(arguments: 0..<badEvents.count)
    func badFieldIsRejectedByName(_ index: Int) throws {
        let (_, mutate, field) = Self.badEvents[index]
        var event = validEvent()
        mutate(&event)
        let error = try #require(throws: ScoreboardError.self) { try event.validate() }
        #expect(error.code == .invalidEvent)
        #expect(error.reasons.contains { $0.hasPrefix(field + ":") }, "\(error.reasons)")
    }

    @Test func everyProblemIsReportedNotOnlyTheFirst() throws {
        var event = validEvent()
        event.userID = ""
        event.points = -1
        event.eventID = "x"
        let error = try #require(throws: ScoreboardError.self) { try event.validate() }
        #expect(error.reasons.count == 3)
    }

    @Test func jsonUsesTheSchemaFieldNames() throws {
        let value = try json(validEvent())
        #expect(value["eventId"] == .string("8b1f2a34-5c6d-4e7f-8a9b-0c1d2e3f4a5b"))
        #expect(value["userId"] == .string("user-42"))
        #expect(value["occurredAt"] == .integer(1_795_000_000_000))
        #expect(value["source"] == .string("player"))
        let decoded = try JSONDecoder().decode(ScoreEvent.self, from: JSONEncoder().encode(validEvent()))
        #expect(decoded == validEvent())
    }

    @Test func partitionKeyIsTheUser() {
        #expect(validEvent().partitionKey == "user-42")
    }
}

/// The event type and the schema in topics/ must agree: whatever one accepts or rejects, so does the other.
@Suite struct ScoreEventSchemaAgreementTests {
    let schema: JSONSchema

    init() throws {
        let catalog = try TopicCatalog.load(directory: repositoryRoot.appendingPathComponent("topics"))
        schema = try #require(try catalog.valueSchema(of: "scoreboard.score-events.v1"))
    }

    @Test func validEventMatchesTheTopicSchema() throws {
        #expect(schema.validate(try json(validEvent())) == [])
        var withoutOptional = validEvent()
        withoutOptional.region = nil
        withoutOptional.guild = nil
        #expect(schema.validate(try json(withoutOptional)) == [])
    }

    @Test(arguments: 0..<ScoreEventTests.badEvents.count)
    func schemaRejectsWhatValidationRejects(_ index: Int) throws {
        let (name, mutate, field) = ScoreEventTests.badEvents[index]
        var event = validEvent()
        mutate(&event)
        let violations = schema.validate(try json(event))
        #expect(violations.contains { $0.pointer == "/" + field }, "\(name): \(violations)")
    }

    @Test func schemaRejectsUnknownAndMissingFields() throws {
        guard case .object(var members) = try json(validEvent()) else { Issue.record("not an object"); return }
        members["bonus"] = .integer(1_000)
        members.removeValue(forKey: "action")
        let violations = schema.validate(.object(members))
        #expect(violations.contains(JSONSchema.Violation(pointer: "/bonus", message: "is not allowed")))
        #expect(violations.contains(JSONSchema.Violation(pointer: "/action", message: "is required")))
    }
}
