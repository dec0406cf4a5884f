import Foundation
import ScoreboardCore

/// The ingest gateway's state in Redis: idempotency records, spent action tokens, bans and rate-limit windows. One
/// Lua script decides and records an ``IngestClaim`` atomically; the key layout and the record encoding live here
/// and nowhere else.
public struct RedisIngestState: Sendable {
    let redis: RedisConnectionPool
    /// How long a 202 answer is kept under its idempotency key.
    public var answerLifetime: Duration = .seconds(86_400)

    public init(redis: RedisConnectionPool) {
        self.redis = redis
    }

    // MARK: - Keys

    public static func idempotencyKey(userID: String, key: String) -> String { "sb:idem:\(userID):\(key)" }
    public static func spentTokenKey(nonce: String) -> String { "sb:atok:\(nonce)" }
    public static func banKey(userID: String) -> String { "sb:ban:\(userID)" }

    /// Each layer has its own prefix, and identifiers cannot contain `:`, so no user's key spells another's.
    public static func key(_ scope: RateLimit.Scope) -> String {
        switch scope {
        case .clientIP(let address): "sb:rl:ip:\(address)"
        case .user(let userID): "sb:rl:user:\(userID)"
        case .action(let userID, let action, let window): "sb:rl:action:\(userID):\(action):\(window)"
        case .mint(let userID): "sb:rl:mint:\(userID)"
        }
    }

    // MARK: - Operations

    /// Before anything is spent: is the user banned, and has this idempotency key been seen (and with what)? One
    /// pipelined round trip.
    public func precheck(userID: String, idempotencyKey: String) async throws -> (banned: Bool, record: IdempotencyRecord?) {
        let replies = try await redis.pipeline([
            ["EXISTS", Self.banKey(userID: userID)],
            ["GET", Self.idempotencyKey(userID: userID, key: idempotencyKey)],
        ]).map { try $0.throwingServerError() }
        let record = replies[1].string.flatMap { try? JSONDecoder().decode(IdempotencyRecord.self, from: Data($0.utf8)) }
        return (replies[0].integer == 1, record)
    }

    /// Checks every limit; when all pass, records the request in each, spends the token (when there is one) and
    /// claims the idempotency key as pending.
    public func admit(_ claim: IngestClaim) async throws -> IngestAdmission {
        var keys = claim.limits.map { Self.key($0.scope) }
        keys.append(claim.tokenNonce.map(Self.spentTokenKey) ?? "")
        keys.append(Self.idempotencyKey(userID: claim.userID, key: claim.idempotencyKey))
        var arguments = [String(claim.now.millisecondsSinceEpoch), claim.requestID, String(claim.limits.count)]
        for limit in claim.limits {
            switch limit.window {
            case .sliding(let milliseconds): arguments += [String(limit.count), String(milliseconds), "0"]
            case .calendar(let resetAt): arguments += [String(limit.count), "0", String(resetAt.millisecondsSinceEpoch)]
            }
        }
        let pending = try JSONEncoder().encode(IdempotencyRecord(fingerprint: claim.fingerprint, answer: nil))
        arguments += [
            claim.tokenNonce == nil ? "0" : "1", String(claim.tokenMemory.wholeMilliseconds), String(decoding: pending, as: UTF8.self),
            String(claim.pendingLifetime.wholeMilliseconds),
        ]
        let reply = try await redis.run(Self.admitScript, keys: keys, arguments: arguments)
        // Anything but the script's own verdicts is an error, never an admission.
        switch (reply.array?.first?.string, reply.array ?? []) {
        case ("ok", _): return .admitted
        case ("limited", let parts) where parts.count == 3:
            let index = Int(parts[1].integer ?? 1) - 1
            let name = claim.limits[max(0, min(index, claim.limits.count - 1))].name
            return .rateLimited(limit: name, retryAfterMilliseconds: parts[2].integer ?? 1000)
        case ("replayed", _): return .tokenReplayed
        case ("in-use", _): return .idempotencyKeyInUse
        default: throw RedisError(code: .unexpectedReply, reason: "the ingest script answered \(reply)")
        }
    }

    /// Before an action token is minted: refuses banned users, and records the mint in `limit` (nothing is recorded
    /// for a refusal). `limit` must be a sliding window.
    public func checkMint(userID: String, limit: RateLimit, requestID: String, now: Timestamp) async throws -> MintAdmission {
        guard case .sliding(let window) = limit.window else { throw RedisError(code: .unexpectedReply, reason: "mint limits are sliding windows") }
        let reply = try await redis.run(
            Self.mintScript, keys: [Self.banKey(userID: userID), Self.key(limit.scope)],
            arguments: [String(now.millisecondsSinceEpoch), String(window), String(limit.count), requestID])
        switch (reply.array?.first?.string, reply.array ?? []) {
        case ("ok", _): return .allowed
        case ("banned", _): return .banned
        case ("limited", let parts) where parts.count == 2: return .rateLimited(retryAfterMilliseconds: parts[1].integer ?? 1000)
        default: throw RedisError(code: .unexpectedReply, reason: "the mint script answered \(reply)")
        }
    }

    /// Stores the 202 answer under the idempotency key: a repeat gets it back.
    public func complete(userID: String, idempotencyKey: String, record: IdempotencyRecord) async throws {
        let encoded = try JSONEncoder().encode(record)
        try await redis.send([
            "SET", Self.idempotencyKey(userID: userID, key: idempotencyKey), String(decoding: encoded, as: UTF8.self),
            "PX", String(answerLifetime.wholeMilliseconds),
        ])
    }

    /// The event was not published: frees the key and the token so the client can retry with both.
    public func release(userID: String, idempotencyKey: String, tokenNonce: String?) async throws {
        var keys = [Self.idempotencyKey(userID: userID, key: idempotencyKey)]
        if let tokenNonce { keys.append(Self.spentTokenKey(nonce: tokenNonce)) }
        try await redis.send(["DEL"] + keys)
    }

    public func setBan(userID: String, banned: Bool) async throws {
        if banned {
            try await redis.send(["SET", Self.banKey(userID: userID), "1"])
        } else {
            try await redis.send(["DEL", Self.banKey(userID: userID)])
        }
    }

    /// Answers when Redis does, throws when it does not.
    public func probe() async throws {
        try await redis.send(["PING"])
    }

    // MARK: - Scripts

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

/// Revoked bearer-token ids in Redis, each kept until the token's own expiry.
public struct RedisTokenRevocations: Sendable {
    let redis: RedisConnectionPool

    public init(redis: RedisConnectionPool) {
        self.redis = redis
    }

    public static func key(tokenID: String) -> String { "sb:jwt:revoked:" + tokenID }

    public func isRevoked(tokenID: String) async throws -> Bool {
        try await redis.send(["EXISTS", Self.key(tokenID: tokenID)]).integer == 1
    }

    /// Refuses `tokenID` until `until` (Redis expires the entry then: `PXAT`).
    public func revoke(tokenID: String, until: Timestamp) async throws {
        try await redis.send(["SET", Self.key(tokenID: tokenID), "1", "PXAT", String(until.millisecondsSinceEpoch)])
    }

    /// Answers when Redis does, throws when it does not.
    public func probe() async throws {
        try await redis.send(["PING"])
    }
}
