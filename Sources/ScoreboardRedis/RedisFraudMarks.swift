import ScoreboardCore

/// Which users have an open fraud flag, in Redis, where the gateway reads it with its other prechecks (one `EXISTS`
/// per item in the same round trip) to apply the adaptive limit.
///
/// Two keys: `sb:fraud:flag:<flagId>` holds the flag's status (`open`, or `closed` once reviewed), and
/// `sb:fraud:open:<userId>` is the set of the user's open flag ids. A worker marks a flag open only if its status key
/// does not exist yet (`SET NX`): a worker that publishes a flag again after a crash (its outbox) cannot reopen a flag a
/// reviewer has closed in the meantime. A review sets the status to `closed` and removes the id from the set.
public struct RedisFraudMarks: Sendable {
    let redis: RedisConnectionPool

    public init(redis: RedisConnectionPool) {
        self.redis = redis
    }

    public static func statusKey(flagID: String) -> String { "sb:fraud:flag:\(flagID)" }
    public static func openKey(userID: String) -> String { "sb:fraud:open:\(userID)" }

    /// Marks each flag open for its user, unless its status exists already (open, or closed by a review).
    public func markOpen(_ flags: [FraudFlagMessage]) async throws {
        for chunk in flags.chunks(of: 200) {
            let reply = try await redis.run(
                Self.markOpenScript, keys: chunk.flatMap { [Self.statusKey(flagID: $0.flagID), Self.openKey(userID: $0.userID)] },
                arguments: chunk.map(\.flagID))
            _ = try reply.throwingServerError()
        }
    }

    /// Closes a reviewed flag: its user is no longer limited for it.
    public func close(flagID: String, userID: String) async throws {
        let reply = try await redis.run(
            Self.closeScript, keys: [Self.statusKey(flagID: flagID), Self.openKey(userID: userID)], arguments: [flagID])
        _ = try reply.throwingServerError()
    }

    /// Whether the user has an open flag.
    public func isFlagged(userID: String) async throws -> Bool {
        try await redis.send(["EXISTS", Self.openKey(userID: userID)]).throwingServerError().integer == 1
    }

    static let markOpenScript = RedisScript(#"""
        -- KEYS, per flag: status key, the user's open set; ARGV, per flag: flag id
        for i = 1, #ARGV do
          if redis.call('SET', KEYS[2 * i - 1], 'open', 'NX') then
            redis.call('SADD', KEYS[2 * i], ARGV[i])
          end
        end
        return 'OK'
        """#)

    static let closeScript = RedisScript(#"""
        -- KEYS: status key, the user's open set; ARGV: flag id
        redis.call('SET', KEYS[1], 'closed')
        redis.call('SREM', KEYS[2], ARGV[1])
        return 'OK'
        """#)
}
