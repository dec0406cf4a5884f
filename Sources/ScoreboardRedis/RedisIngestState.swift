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
        case .flagged(let userID): "sb:rl:flagged:\(userID)"
        }
    }

    // MARK: - Operations

    /// How many items one round trip carries at most. A script blocks the server while it runs, so a chunk of
    /// admissions is bounded: a few milliseconds of Redis time, whatever the batch.
    public var chunkSize = 500

    /// Before anything is spent, for each key: is the user banned, has the user an open fraud flag
    /// (``RedisFraudMarks``), and has the idempotency key been seen (and with what)? Two `MGET`s and an `EXISTS` per
    /// distinct user, pipelined in one round trip per chunk.
    public func precheck(_ keys: [IngestKey]) async throws -> [IngestPrecheck] {
        var answers: [IngestPrecheck] = []
        answers.reserveCapacity(keys.count)
        for chunk in keys.chunks(of: chunkSize) {
            // Each distinct user once (a game server's batch has many items per user).
            var seen: Set<String> = []
            let users = chunk.map(\.userID).filter { seen.insert($0).inserted }
            var commands: [[String]] = [
                ["MGET"] + chunk.map { Self.banKey(userID: $0.userID) },
                ["MGET"] + chunk.map { Self.idempotencyKey(userID: $0.userID, key: $0.idempotencyKey) },
            ]
            for user in users { commands.append(["EXISTS", RedisFraudMarks.openKey(userID: user)]) }
            let replies = try await redis.pipeline(commands).map { try $0.throwingServerError() }
            guard replies.count == 2 + users.count else { throw RedisError(code: .unexpectedReply, reason: "the precheck answered \(replies.count) replies") }
            var flagged: Set<String> = []
            for (user, reply) in zip(users, replies.dropFirst(2)) where reply.integer == 1 { flagged.insert(user) }
            guard let bans = replies[0].array, let records = replies[1].array, bans.count == chunk.count, records.count == chunk.count else {
                throw RedisError(code: .unexpectedReply, reason: "MGET answered \(replies)")
            }
            for (key, (ban, record)) in zip(chunk, zip(bans, records)) {
                // An unreadable record is taken as none: the admission script still finds the key in use.
                let decoded = record.string.flatMap { try? JSONDecoder().decode(IdempotencyRecord.self, from: Data($0.utf8)) }
                answers.append(IngestPrecheck(banned: !ban.isNull, record: decoded, flagged: flagged.contains(key.userID)))
            }
        }
        return answers
    }

    /// Decides each claim in order, one script call per chunk: checks every limit; when all pass, records the
    /// request in each, spends the token (when there is one) and claims the idempotency key as pending. Chunks run
    /// one after another, so a claim sees every claim before it. A chunk Redis failed on answers its error for each
    /// of its claims.
    public func admit(_ claims: [IngestClaim]) async throws -> [Result<IngestAdmission, any Error>] {
        var verdicts: [Result<IngestAdmission, any Error>] = []
        verdicts.reserveCapacity(claims.count)
        let encoder = JSONEncoder()
        for chunk in claims.chunks(of: chunkSize) {
            var keys: [String] = []
            var arguments = [String(chunk.count)]
            for claim in chunk {
                keys += claim.limits.map { Self.key($0.scope) }
                keys.append(claim.tokenNonce.map(Self.spentTokenKey) ?? "")
                keys.append(Self.idempotencyKey(userID: claim.userID, key: claim.idempotencyKey))
                arguments += [String(claim.now.millisecondsSinceEpoch), claim.requestID, String(claim.limits.count)]
                for limit in claim.limits {
                    switch limit.window {
                    case .sliding(let milliseconds): arguments += [String(limit.count), String(milliseconds), "0"]
                    case .calendar(let resetAt): arguments += [String(limit.count), "0", String(resetAt.millisecondsSinceEpoch)]
                    }
                }
                let pending = try encoder.encode(IdempotencyRecord(fingerprint: claim.fingerprint, answer: nil))
                arguments += [
                    claim.tokenNonce == nil ? "0" : "1", String(claim.tokenMemory.wholeMilliseconds), String(decoding: pending, as: UTF8.self),
                    String(claim.pendingLifetime.wholeMilliseconds),
                ]
            }
            do {
                let reply = try await redis.run(Self.admitScript, keys: keys, arguments: arguments)
                guard let answers = reply.array, answers.count == chunk.count else {
                    throw RedisError(code: .unexpectedReply, reason: "the ingest script answered \(reply)")
                }
                for (claim, answer) in zip(chunk, answers) {
                    verdicts.append(Result { try Self.admission(answer, claim: claim) })
                }
            } catch {
                // This chunk's claims fail, not the earlier chunks' (already admitted, they must be published or
                // released by the caller): the error is each claim's own.
                verdicts += chunk.map { _ in .failure(error) }
            }
        }
        return verdicts
    }

    /// One claim's verdict from the script. Anything but the script's own verdicts is an error, never an admission.
    static func admission(_ answer: RedisReply, claim: IngestClaim) throws -> IngestAdmission {
        switch (answer.array?.first?.string, answer.array ?? []) {
        case ("ok", _): return .admitted
        case ("limited", let parts) where parts.count == 3:
            let index = Int(parts[1].integer ?? 1) - 1
            let name = claim.limits[max(0, min(index, claim.limits.count - 1))].name
            return .rateLimited(limit: name, retryAfterMilliseconds: parts[2].integer ?? 1000)
        case ("replayed", _): return .tokenReplayed
        case ("in-use", _): return .idempotencyKeyInUse
        case ("error", let parts): throw RedisError(code: .server, reason: parts.dropFirst().first?.string ?? "the ingest script failed on this claim")
        default: throw RedisError(code: .unexpectedReply, reason: "the ingest script answered \(answer)")
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

    /// Stores each 202 answer under its idempotency key: a repeat gets it back. One pipelined round trip per chunk.
    public func complete(_ completions: [IngestCompletion]) async throws {
        let encoder = JSONEncoder()
        for chunk in completions.chunks(of: chunkSize) {
            let commands = try chunk.map { completion in
                [
                    "SET", Self.idempotencyKey(userID: completion.key.userID, key: completion.key.idempotencyKey),
                    String(decoding: try encoder.encode(completion.record), as: UTF8.self), "PX", String(answerLifetime.wholeMilliseconds),
                ]
            }
            for reply in try await redis.pipeline(commands) { _ = try reply.throwingServerError() }
        }
    }

    /// The events were not published: frees their keys and tokens so the clients can retry with both. One `DEL`
    /// per chunk.
    public func release(_ releases: [IngestRelease]) async throws {
        for chunk in releases.chunks(of: chunkSize) {
            var keys: [String] = []
            for release in chunk {
                keys.append(Self.idempotencyKey(userID: release.key.userID, key: release.key.idempotencyKey))
                if let nonce = release.tokenNonce { keys.append(Self.spentTokenKey(nonce: nonce)) }
            }
            try await redis.send(["DEL"] + keys)
        }
    }

    /// The ban key's value for a ban confirmed by fraud review (any other value is a ban set by an admin's `PUT`).
    public static let confirmedBan = "confirmed"

    /// `banned`: sets the ban, keeping one already there (a confirmed ban stays confirmed); otherwise deletes it,
    /// whatever it was (``liftBan(userID:)`` is the checked way).
    public func setBan(userID: String, banned: Bool) async throws {
        if banned {
            try await redis.send(["SET", Self.banKey(userID: userID), "1", "NX"])
        } else {
            try await redis.send(["DEL", Self.banKey(userID: userID)])
        }
    }

    /// The ban of a confirmed fraud flag: 403 at the gateway at once, and not lifted by ``liftBan(userID:)``.
    public func confirmBan(userID: String) async throws {
        try await redis.send(["SET", Self.banKey(userID: userID), Self.confirmedBan])
    }

    public func liftBan(userID: String) async throws -> Bool {
        let reply = try await redis.run(Self.liftBanScript, keys: [Self.banKey(userID: userID)], arguments: [Self.confirmedBan])
        return reply.integer == 1
    }

    /// Deletes the ban unless it was confirmed by review, in one step (a review confirming meanwhile is not undone).
    static let liftBanScript = RedisScript("""
        -- KEYS: ban key; ARGV: the confirmed value
        if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
        redis.call('DEL', KEYS[1])
        return 1
        """)

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
        -- Decides a chunk of claims in order; a claim sees what the claims before it recorded.
        -- KEYS, per claim: limit keys…, used-token key ("" when none), idempotency key
        -- ARGV: claim count, then per claim: now, request id, limit count n, (count, sliding ms or 0, reset-at ms)×n,
        --       has token, token ttl ms, pending record, pending ttl ms
        -- Answers one verdict per claim: {'ok'}, {'limited', limit index, wait ms}, {'replayed'}, {'in-use'}, or
        -- {'error', message} when Redis refused a command for that claim (the others are decided all the same).
        local function decide(k, a)
          -- k: the claim's keys start after KEYS[k]; a: its arguments after ARGV[a]
          local now = tonumber(ARGV[a + 1])
          local member = ARGV[a + 2]
          local n = tonumber(ARGV[a + 3])
          local base = a + 3 + n * 3
          local hasToken = ARGV[base + 1] == '1'
          local tokenKey = KEYS[k + n + 1]
          local idemKey = KEYS[k + n + 2]
          -- A replayed token is refused first: it is the stronger fraud signal, whatever the limits say.
          if hasToken and redis.call('EXISTS', tokenKey) == 1 then return {'replayed'} end
          local worst, which = 0, 0
          for i = 1, n do
            local key = KEYS[k + i]
            local count = tonumber(ARGV[a + 3 + (i - 1) * 3 + 1])
            local window = tonumber(ARGV[a + 3 + (i - 1) * 3 + 2])
            local resetAt = tonumber(ARGV[a + 3 + (i - 1) * 3 + 3])
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
          if redis.call('EXISTS', idemKey) == 1 then return {'in-use'} end
          if hasToken then
            if not redis.call('SET', tokenKey, '1', 'NX', 'PX', ARGV[base + 2]) then return {'replayed'} end
          end
          redis.call('SET', idemKey, ARGV[base + 3], 'PX', ARGV[base + 4])
          for i = 1, n do
            local key = KEYS[k + i]
            local window = tonumber(ARGV[a + 3 + (i - 1) * 3 + 2])
            if window > 0 then
              redis.call('ZADD', key, now, member)
              redis.call('PEXPIRE', key, window)
            else
              redis.call('INCR', key)
              redis.call('PEXPIREAT', key, tonumber(ARGV[a + 3 + (i - 1) * 3 + 3]))
            end
          end
          return {'ok'}
        end
        local verdicts = {}
        local k, a = 0, 1
        for c = 1, tonumber(ARGV[1]) do
          local n = tonumber(ARGV[a + 3])
          local ok, verdict = pcall(decide, k, a)
          if ok then
            verdicts[c] = verdict
          else
            -- One claim's failure (a key of the wrong type, say) is its own: it answers an error, the rest go on.
            verdicts[c] = {'error', tostring(verdict and verdict.err or verdict)}
          end
          k = k + n + 2
          a = a + 3 + n * 3 + 4
        end
        return verdicts
        """#)
}

extension Array {
    /// The elements in consecutive slices of at most `size` (the last one shorter); none for an empty array.
    func chunks(of size: Int) -> [ArraySlice<Element>] {
        let size = Swift.max(size, 1)
        return stride(from: 0, to: count, by: size).map { self[$0..<Swift.min($0 + size, count)] }
    }
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
