import Foundation
import ScoreboardCore

/// A record of the score-events topic (`topics/score-events.yaml`): a score event, or a ban (``UserBanned``).
public enum ScoreEventsRecord: Hashable, Sendable {
    case event(ScoreEvent)
    case ban(UserBanned)

    /// Only the field that tells the kinds apart: a score event has no `kind`.
    private struct Kind: Decodable {
        var kind: String?
    }

    /// Decodes either kind; a ban is validated here (an event is validated by the caller, after pricing).
    /// - Throws: A `DecodingError`, or ``ScoreboardError`` `invalidEvent` for a ban that names no valid user.
    public static func decode(_ data: Data, decoder: JSONDecoder = JSONDecoder()) throws -> ScoreEventsRecord {
        // Cheap first look: only a message that mentions a kind is decoded twice.
        if data.range(of: Data(#""kind""#.utf8)) != nil, try decoder.decode(Kind.self, from: data).kind == UserBanned.kind {
            let ban = try decoder.decode(UserBanned.self, from: data)
            try ban.validate()
            return .ban(ban)
        }
        return .event(try decoder.decode(ScoreEvent.self, from: data))
    }
}
