import Foundation
@testable import ScoreboardCLI
import ScoreboardCore
import Testing

/// The push gateway's reading of leaderboard-updates messages: a rolling deploy has workers publishing schema
/// versions 1 and 2 side by side, and a message of neither shape is skipped rather than stopping the feed.
@Suite struct LeaderboardUpdatesMessageTests {
    static let board = BoardKey(window: .daily, period: "2026-11-25", dimension: .region, value: "eu")

    @Test func versionOneIsOneMembersChange() throws {
        let json = #"{"schemaVersion":1,"board":"daily:2026-11-25:region:eu","window":"daily","period":"2026-11-25","dimension":"region","dimensionValue":"eu","userId":"u1","total":42,"rank":3}"#
        let changes = try #require(LeaderboardUpdatesMessage.decode(Array(json.utf8)))
        #expect(changes == BoardChanges(board: Self.board, members: [.init(userID: "u1", total: 42, rank: 3)]))
    }

    @Test func versionTwoCarriesEveryChangedMember() throws {
        let json = #"{"schemaVersion":2,"board":"daily:2026-11-25:region:eu","window":"daily","period":"2026-11-25","dimension":"region","dimensionValue":"eu","members":[{"userId":"u1","total":42,"rank":1},{"userId":"u2","total":7}]}"#
        let changes = try #require(LeaderboardUpdatesMessage.decode(Array(json.utf8)))
        #expect(changes == BoardChanges(board: Self.board, members: [.init(userID: "u1", total: 42, rank: 1), .init(userID: "u2", total: 7, rank: nil)]))
        #expect(changes.streamID == "daily:region:eu")
    }

    /// What the worker's encoder writes reads back the same.
    @Test func roundTripsTheCoreEncoding() throws {
        let sent = BoardChanges(board: Self.board, members: [.init(userID: "a", total: 1, rank: nil), .init(userID: "b", total: 2, rank: 1)])
        #expect(LeaderboardUpdatesMessage.decode(Array(try JSONEncoder().encode(sent))) == sent)
        let single = LeaderboardUpdate(board: Self.board, userID: "a", total: 5, rank: nil)
        #expect(LeaderboardUpdatesMessage.decode(Array(try JSONEncoder().encode(single))) == BoardChanges(single))
    }

    /// Bad input: an unknown version, a version 2 message without members (or with none), a version 1 message
    /// without a total, a version that does not match its fields, and bytes that are not JSON.
    @Test func messagesOfNeitherShapeAreSkipped() {
        let head = #""board":"x","window":"daily","period":"2026-11-25","dimension":"global""#
        for bad in [
            #"{"schemaVersion":3,"# + head + #","members":[{"userId":"u","total":1}]}"#,
            #"{"schemaVersion":2,"# + head + "}",
            #"{"schemaVersion":2,"# + head + #","members":[]}"#,
            #"{"schemaVersion":1,"# + head + #","userId":"u"}"#,
            #"{"schemaVersion":1,"# + head + #","members":[{"userId":"u","total":1}]}"#,
            "not json",
        ] {
            #expect(LeaderboardUpdatesMessage.decode(Array(bad.utf8)) == nil, "\(bad)")
        }
    }
}
