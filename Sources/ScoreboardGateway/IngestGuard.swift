import Foundation
import ScoreboardCore
import ScoreboardRedis

/// The gateway's Redis state for one ingest request, checked and recorded atomically by one Lua script: layered rate
/// limits, the action token's one-time use, and the idempotency key's claim.
public struct IngestGuard: Sendable {
    /// One limit to check and, when the request passes, to record.
    public struct Limit: Sendable, Hashable {
        /// Which layer: `ip`, `user`, `action:<id>:<period>`. Reported to the client and the rejections topic.
        public var name: String
        public var key: String
        public var count: Int
        /// A sliding window of this length (a sorted set of request times); `nil` for a calendar period ending at
        /// ``resetAt`` (a counter).
        public var slidingMilliseconds: Int64?
        public var resetAt: Timestamp?
    }

    public enum Outcome: Sendable, Hashable {
        case admitted
        case rateLimited(limit: String, retryAfterMilliseconds: Int64)
        case tokenReplayed
        case idempotencyKeyInUse
    }

    /// What an idempotency key holds: `pending` while the event is being published, then the 202 answer. The
    /// fingerprint binds the key to the request it was first used with.
    public struct IdempotencyRecord: Codable, Sendable, Hashable {
        public var fingerprint: String
        public var answer: AcceptedScore?
    }

    let redis: RedisConnectionPool
    public var idempotencyTTL: Duration = .seconds(86_400)

    public init(redis: RedisConnectionPool) {
        self.redis = redis
    }

    public static func idempotencyKey(userID: String, key: String) -> String { "sb:idem:\(userID):\(key)" }
    public static func usedTokenKey(nonce: String) -> String { "sb:atok:\(nonce)" }
    public static func banKey(userID: String) -> String { "sb:ban:\(userID)" }

    /// The limits of one request: per IP, per user, and the action's own from the catalog.
    public static func limits(
        clientIP: String?, userID: String, action: String, definition: ActionDefinition, configuration: GatewayConfiguration, now: Timestamp
    ) -> [Limit] {
        var limits: [Limit] = []
        if let clientIP {
            limits.append(Limit(name: "ip", key: "sb:rl:ip:\(clientIP)", count: configuration.perIPPerMinute, slidingMilliseconds: 60_000))
        }
        limits.append(Limit(name: "user", key: "sb:rl:user:\(userID)", count: configuration.perUserPerMinute, slidingMilliseconds: 60_000))
        for limit in definition.limits {
            let name = "action:\(action):\(limit.per.rawValue)"
            // Each layer has its own prefix, and identifiers cannot contain `:` (``ScoreEvent/identifierProblem(_:)``),
            // so no user's key can spell another user's or another layer's.
            if let sliding = limit.per.slidingMilliseconds {
                limits.append(Limit(
                    name: name, key: "sb:rl:action:\(userID):\(action):\(limit.per.rawValue)", count: limit.count, slidingMilliseconds: sliding))
            } else {
                let day = LeaderboardWindow.daily.period(containing: now)
                limits.append(Limit(
                    name: name, key: "sb:rl:action:\(userID):\(action):day:\(day.key)", count: limit.count, slidingMilliseconds: nil,
                    resetAt: day.end))
            }
        }
        return limits
    }

    /// Before anything is spent: is the user banned, and has this idempotency key been seen (and with what)?
    public func precheck(userID: String, idempotencyKey: String) async throws -> (banned: Bool, record: IdempotencyRecord?) {
        let replies = try await redis.pipeline([
            ["EXISTS", Self.banKey(userID: userID)],
            ["GET", Self.idempotencyKey(userID: userID, key: idempotencyKey)],
        ])
        let record = replies[1].string.flatMap { try? JSONDecoder().decode(IdempotencyRecord.self, from: Data($0.utf8)) }
        return (replies[0].integer == 1, record)
    }

    /// Checks every limit; when all pass, records the request in each, marks the token used (when there is one) and
    /// claims the idempotency key as pending. Nothing is recorded for a refused request.
    public func admit(
        limits: [Limit], tokenNonce: String?, userID: String, idempotencyKey: String, fingerprint: String, requestID: String, now: Timestamp
    ) async throws -> Outcome {
        var keys = limits.map(\.key)
        keys.append(tokenNonce.map(Self.usedTokenKey) ?? "")
        keys.append(Self.idempotencyKey(userID: userID, key: idempotencyKey))
        var arguments = [String(now.millisecondsSinceEpoch), requestID, String(limits.count)]
        for limit in limits {
            arguments += [String(limit.count), String(limit.slidingMilliseconds ?? 0), String(limit.resetAt?.millisecondsSinceEpoch ?? 0)]
        }
        let pending = try JSONEncoder().encode(IdempotencyRecord(fingerprint: fingerprint, answer: nil))
        arguments += [
            tokenNonce == nil ? "0" : "1", String(ActionToken.lifetimeMilliseconds * 2), String(decoding: pending, as: UTF8.self),
            String(Self.pendingTTLMilliseconds),
        ]
        let reply = try await redis.run(Self.admitScript, keys: keys, arguments: arguments)
        // Anything but the script's own verdicts is an error, never an admission.
        switch (reply.array?.first?.string, reply.array ?? []) {
        case ("ok", _): return .admitted
        case ("limited", let parts) where parts.count == 3:
            let index = Int(parts[1].integer ?? 1) - 1
            return .rateLimited(limit: limits[max(0, min(index, limits.count - 1))].name, retryAfterMilliseconds: parts[2].integer ?? 1000)
        case ("replayed", _): return .tokenReplayed
        case ("in-use", _): return .idempotencyKeyInUse
        default: throw RedisError(code: .unexpectedReply, reason: "the ingest guard script answered \(reply)")
        }
    }

    public enum MintOutcome: Sendable, Hashable {
        case allowed
        case banned
        case rateLimited(retryAfterMilliseconds: Int64)
    }

    public static func mintLimitKey(userID: String) -> String { "sb:rl:mint:\(userID)" }

    /// Before an action token is minted: refuses banned users, and records the mint in the user's sliding minute
    /// (nothing is recorded for a refusal).
    public func checkMint(userID: String, perMinute: Int, requestID: String, now: Timestamp) async throws -> MintOutcome {
        let reply = try await redis.run(
            Self.mintScript, keys: [Self.banKey(userID: userID), Self.mintLimitKey(userID: userID)],
            arguments: [String(now.millisecondsSinceEpoch), "60000", String(perMinute), requestID])
        switch (reply.array?.first?.string, reply.array ?? []) {
        case ("ok", _): return .allowed
        case ("banned", _): return .banned
        case ("limited", let parts) where parts.count == 2: return .rateLimited(retryAfterMilliseconds: parts[1].integer ?? 1000)
        default: throw RedisError(code: .unexpectedReply, reason: "the mint script answered \(reply)")
        }
    }

    static let mintScript = RedisScript(#"""
        -- KEYS: ban key, mint window key; ARGV: now ms, window ms, count, member
        if redis.call('EXISTS', KEYS[1]) == 1 then return {'banned'} end
        local now = tonumber(ARGV[1])
        local window = tonumber(ARGV[2])
        redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
        if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
          local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
          return {'limited', math.max(tonumber(oldest[2]) + window - now, 1)}
        end
        redis.call('ZADD', KEYS[2], now, ARGV[4])
        redis.call('PEXPIRE', KEYS[2], window)
        return {'ok'}
        """#)

    /// A pending claim outlives any publish attempt (the producer's delivery timeout), so a retry cannot race it.
    static let pendingTTLMilliseconds: Int64 = 120_000

    /// Stores the 202 answer under the idempotency key: a repeat gets it back.
    public func complete(userID: String, idempotencyKey: String, fingerprint: String, answer: AcceptedScore) async throws {
        let record = try JSONEncoder().encode(IdempotencyRecord(fingerprint: fingerprint, answer: answer))
        try await redis.send([
            "SET", Self.idempotencyKey(userID: userID, key: idempotencyKey), String(decoding: record, as: UTF8.self),
            "PX", String(idempotencyTTL.components.seconds * 1000),
        ])
    }

    /// The event was not published: free the key and the token so the client can retry with both.
    public func release(userID: String, idempotencyKey: String, tokenNonce: String?) async throws {
        var keys = [Self.idempotencyKey(userID: userID, key: idempotencyKey)]
        if let tokenNonce { keys.append(Self.usedTokenKey(nonce: tokenNonce)) }
        try await redis.send(["DEL"] + keys)
    }

    static let admitScript = RedisScript(#"""
        -- KEYS: limit keys…, used-token key ("" when none), idempotency key
        -- ARGV: now, request id, limit count, (count, sliding ms or 0, reset-at ms)…, has token, token ttl ms,
        --       pending record, pending ttl ms
        local now = tonumber(ARGV[1])
        local member = ARGV[2]
        local n = tonumber(ARGV[3])
        local base = 3 + n * 3
        local hasToken = ARGV[base + 1] == '1'
        -- A replayed token is refused first: it is the stronger fraud signal, whatever the limits say.
        if hasToken and redis.call('EXISTS', KEYS[n + 1]) == 1 then return {'replayed'} end
        local worst, which = 0, 0
        for i = 1, n do
          local key = KEYS[i]
          local count = tonumber(ARGV[3 + (i - 1) * 3 + 1])
          local window = tonumber(ARGV[3 + (i - 1) * 3 + 2])
          local resetAt = tonumber(ARGV[3 + (i - 1) * 3 + 3])
          if window > 0 then
            redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
            if redis.call('ZCARD', key) >= count then
              local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
              local wait = tonumber(oldest[2]) + window - now
              if wait > worst then worst, which = wait, i end
            end
          else
            local used = tonumber(redis.call('GET', key) or '0')
            if used >= count then
              local wait = resetAt - now
              if wait > worst then worst, which = wait, i end
            end
          end
        end
        if which > 0 then return {'limited', which, math.max(worst, 1)} end
        local tokenKey = KEYS[n + 1]
        local idemKey = KEYS[n + 2]
        if redis.call('EXISTS', idemKey) == 1 then return {'in-use'} end
        if hasToken then
          if not redis.call('SET', tokenKey, '1', 'NX', 'PX', ARGV[base + 2]) then return {'replayed'} end
        end
        redis.call('SET', idemKey, ARGV[base + 3], 'PX', ARGV[base + 4])
        for i = 1, n do
          local key = KEYS[i]
          local window = tonumber(ARGV[3 + (i - 1) * 3 + 2])
          if window > 0 then
            redis.call('ZADD', key, now, member)
            redis.call('PEXPIRE', key, window)
          else
            redis.call('INCR', key)
            redis.call('PEXPIREAT', key, tonumber(ARGV[3 + (i - 1) * 3 + 3]))
          end
        end
        return {'ok'}
        """#)
}
