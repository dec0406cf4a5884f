import Foundation
import Logging
import ScoreboardCore
import ScoreboardDefinitions
import ScoreboardGateway
import ScoreboardHTTP
import ScoreboardKafka
import ScoreboardRedis
import Testing

/// The memory ingest state keeps state like the Redis adapter: the same claims get the same verdicts from both (Redis
/// is the shared local one, database 21; users are unique per run).
@Suite(.timeLimit(.minutes(1)))
struct GatewayIngestStateContractTests {
    enum Store: String, CaseIterable { case memory, redis }

    /// A store, and the clock both the store and its claims use (Redis expires by its own clock, so real time there).
    func withStore(_ store: Store, _ body: (any IngestState, @escaping @Sendable () -> Timestamp) async throws -> Void) async throws {
        switch store {
        case .memory:
            let clock = TestClock()
            try await body(MemoryIngestState(clock: clock.now), clock.now)
        case .redis:
            let redis = RedisConnectionPool(configuration: try GatewayHarness.localRedis(), logger: Logger(label: "test"))
            defer { redis.close() }
            try await body(RedisIngestState(redis: redis), { Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000)) })
        }
    }

    func claim(
        user: String, key: String, nonce: String? = nil, fingerprint: String = "f1", limits: [RateLimit] = [], now: Timestamp
    ) -> IngestClaim {
        IngestClaim(
            userID: user, idempotencyKey: key, fingerprint: fingerprint, tokenNonce: nonce, tokenMemory: .seconds(120),
            pendingLifetime: .seconds(120), limits: limits, requestID: UUID().uuidString, now: now)
    }

    @Test(arguments: Store.allCases)
    func claimsKeysTokensAndAnswers(store: Store) async throws {
        try await withStore(store) { state, clock async throws in
            let user = "u-\(UUID().uuidString.prefix(8))", key = UUID().uuidString.lowercased(), nonce = UUID().uuidString
            let fresh = try await state.precheck(userID: user, idempotencyKey: key)
            #expect(!fresh.banned && fresh.record == nil)
            #expect(try await state.admit(claim(user: user, key: key, nonce: nonce, now: clock())) == .admitted)
            // Pending: the key is in use, the token spent.
            #expect(try await state.precheck(userID: user, idempotencyKey: key).record == IdempotencyRecord(fingerprint: "f1", answer: nil))
            #expect(try await state.admit(claim(user: user, key: key, now: clock())) == .idempotencyKeyInUse)
            #expect(try await state.admit(claim(user: user, key: UUID().uuidString, nonce: nonce, now: clock())) == .tokenReplayed)
            // Released: both free again.
            try await state.release(userID: user, idempotencyKey: key, tokenNonce: nonce)
            #expect(try await state.precheck(userID: user, idempotencyKey: key).record == nil)
            #expect(try await state.admit(claim(user: user, key: key, nonce: nonce, now: clock())) == .admitted)
            // Completed: the answer is kept.
            let answer = AcceptedScore(eventID: "e", partition: 3, offset: 7, userID: user, action: "a", points: 5, occurredAt: 1)
            try await state.complete(userID: user, idempotencyKey: key, record: IdempotencyRecord(fingerprint: "f1", answer: answer))
            #expect(try await state.precheck(userID: user, idempotencyKey: key).record?.answer == answer)
            // Bans.
            try await state.setBan(userID: user, banned: true)
            #expect(try await state.precheck(userID: user, idempotencyKey: key).banned)
            let mint = RateLimit(name: "action-tokens", scope: .mint(userID: user), count: 1, window: .sliding(milliseconds: 60_000))
            #expect(try await state.checkMint(userID: user, limit: mint, requestID: "r1", now: clock()) == .banned)
            try await state.setBan(userID: user, banned: false)
            #expect(try await state.checkMint(userID: user, limit: mint, requestID: "r2", now: clock()) == .allowed)
            guard case .rateLimited = try await state.checkMint(userID: user, limit: mint, requestID: "r3", now: clock()) else {
                Issue.record("a second mint within the minute was allowed")
                return
            }
            try await state.probe()
        }
    }

    @Test(arguments: Store.allCases)
    func limitsRefuseWithTheWorstWaitAndRecordNothingForARefusal(store: Store) async throws {
        try await withStore(store) { state, clock async throws in
            let user = "u-\(UUID().uuidString.prefix(8))"
            let now = clock()
            let tomorrow = Timestamp(millisecondsSinceEpoch: now.millisecondsSinceEpoch + 3_600_000)
            let limits = [
                RateLimit(name: "user", scope: .user(user), count: 2, window: .sliding(milliseconds: 60_000)),
                RateLimit(name: "daily", scope: .action(userID: user, action: "a", window: "day:x"), count: 1, window: .calendar(resetAt: tomorrow)),
            ]
            #expect(try await state.admit(claim(user: user, key: UUID().uuidString, limits: limits, now: now)) == .admitted)
            // Bad input: a second request: the user window has room, the daily counter does not (the longer wait wins).
            #expect(
                try await state.admit(claim(user: user, key: UUID().uuidString, limits: limits, now: now))
                    == .rateLimited(limit: "daily", retryAfterMilliseconds: 3_600_000))
            // The refusal was not recorded: the user window still admits one more under its own limit alone.
            #expect(try await state.admit(claim(user: user, key: UUID().uuidString, limits: [limits[0]], now: now)) == .admitted)
            #expect(
                try await state.admit(claim(user: user, key: UUID().uuidString, limits: [limits[0]], now: now))
                    == .rateLimited(limit: "user", retryAfterMilliseconds: 60_000))
        }
    }

    @Test(arguments: Store.allCases)
    func aBatchIsDecidedInOrderAsSeparateRequestsWouldBe(store: Store) async throws {
        try await withStore(store) { state, clock async throws in
            let user = "u-\(UUID().uuidString.prefix(8))", other = "v-\(UUID().uuidString.prefix(8))"
            let key = UUID().uuidString.lowercased(), nonce = UUID().uuidString
            let now = clock()
            let onceAMinute = RateLimit(name: "user", scope: .user(other), count: 1, window: .sliding(milliseconds: 60_000))
            #expect(try await state.admit([]).isEmpty)
            #expect(try await state.precheck([]).isEmpty)
            // Bad input: one batch that reuses its own key, its own token and its own last slot of a limit.
            let verdicts = try await state.admit([
                claim(user: user, key: key, nonce: nonce, now: now),
                claim(user: user, key: key, now: now),
                claim(user: user, key: UUID().uuidString, nonce: nonce, now: now),
                claim(user: other, key: UUID().uuidString, limits: [onceAMinute], now: now),
                claim(user: other, key: UUID().uuidString, limits: [onceAMinute], now: now),
            ]).map { try $0.get() }
            #expect(verdicts == [
                .admitted, .idempotencyKeyInUse, .tokenReplayed, .admitted, .rateLimited(limit: "user", retryAfterMilliseconds: 60_000),
            ])
            // Prechecks answer per key, in order.
            try await state.setBan(userID: other, banned: true)
            let fresh = UUID().uuidString.lowercased()
            #expect(try await state.precheck([
                IngestKey(userID: user, idempotencyKey: key), IngestKey(userID: user, idempotencyKey: fresh), IngestKey(userID: other, idempotencyKey: fresh),
            ]) == [
                IngestPrecheck(banned: false, record: IdempotencyRecord(fingerprint: "f1", answer: nil)),
                IngestPrecheck(banned: false, record: nil), IngestPrecheck(banned: true, record: nil),
            ])
            // One call completes or releases many: the answer is kept, the released key and token are free again.
            let second = UUID().uuidString.lowercased(), secondNonce = UUID().uuidString
            #expect(try await state.admit(claim(user: user, key: second, nonce: secondNonce, now: clock())) == .admitted)
            let answer = AcceptedScore(eventID: "e", partition: 1, offset: 2, userID: user, action: "a", points: 5, occurredAt: 1)
            try await state.complete([IngestCompletion(key: IngestKey(userID: user, idempotencyKey: key), record: IdempotencyRecord(fingerprint: "f1", answer: answer))])
            try await state.release([
                IngestRelease(key: IngestKey(userID: user, idempotencyKey: second), tokenNonce: secondNonce),
                IngestRelease(key: IngestKey(userID: user, idempotencyKey: fresh), tokenNonce: nil),
            ])
            #expect(try await state.precheck([IngestKey(userID: user, idempotencyKey: key), IngestKey(userID: user, idempotencyKey: second)]).map(\.record)
                == [IdempotencyRecord(fingerprint: "f1", answer: answer), nil])
            #expect(try await state.admit(claim(user: user, key: second, nonce: secondNonce, now: clock())) == .admitted)
        }
    }

    /// Redis decides a long batch in bounded chunks, one script call each; a later chunk sees the earlier ones, and a
    /// claim Redis fails on fails alone.
    @Test func redisChunksSeeTheChunksBeforeThemAndAFailedClaimSpoilsNoOther() async throws {
        let redis = RedisConnectionPool(configuration: try GatewayHarness.localRedis(), logger: Logger(label: "test"))
        defer { redis.close() }
        var state = RedisIngestState(redis: redis)
        state.chunkSize = 2
        let now = Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000))
        let user = "u-\(UUID().uuidString.prefix(8))", key = UUID().uuidString.lowercased()
        // Bad input: five claims of one key, across three chunks.
        let verdicts = try await state.admit((0..<5).map { _ in claim(user: user, key: key, now: now) }).map { try $0.get() }
        #expect(verdicts == [.admitted] + Array(repeating: .idempotencyKeyInUse, count: 4))
        #expect(try await state.precheck(Array(repeating: IngestKey(userID: user, idempotencyKey: key), count: 5)).map(\.record)
            == Array(repeating: IdempotencyRecord(fingerprint: "f1", answer: nil), count: 5))

        // Bad state: the middle user's limit key holds a string, so Redis refuses its commands (WRONGTYPE).
        let broken = "b-\(UUID().uuidString.prefix(8))"
        try await redis.send(["SET", RedisIngestState.key(.user(broken)), "x", "EX", "60"])
        let limit = RateLimit(name: "user", scope: .user(broken), count: 5, window: .sliding(milliseconds: 60_000))
        let mixed = try await state.admit([
            claim(user: user, key: UUID().uuidString, now: now), claim(user: broken, key: UUID().uuidString, limits: [limit], now: now),
            claim(user: user, key: UUID().uuidString, now: now),
        ])
        #expect((try? mixed[0].get()) == .admitted && (try? mixed[2].get()) == .admitted)
        #expect(throws: RedisError.self) { try mixed[1].get() }
    }
}

/// The Kafka adapter encodes score events once, in a form the topic's schema accepts.
struct GatewayKafkaEncodingTests {
    @Test func scoreEventsAreEncodedAsTheTopicsSchemaSaysAndKeyedByUser() throws {
        let topics = try TopicCatalog.load(directory: GatewayHarness.root.appendingPathComponent("topics"))
        let schema = try #require(try topics.valueSchema(of: TopicNames.scoreEventsBase))
        for (region, guild, source) in [(String?.none, String?.none, ScoreEvent.Source.player), ("eu", "dragons", .gameServer)] {
            let event = ScoreEvent(
                eventID: ScoreIngest.eventID(userID: "alice", idempotencyKey: "0b5e2c1a-7f7e-4a6e-9f0e-3a1d2c3b4a59"), userID: "alice",
                action: "pvp-win", points: 25, occurredAt: Timestamp(millisecondsSinceEpoch: 1_795_000_000_000), region: region, guild: guild,
                idempotencyKey: "0b5e2c1a-7f7e-4a6e-9f0e-3a1d2c3b4a59", source: source)
            let message = try KafkaScoreEvents.message(for: event, topic: "t")
            #expect(schema.validate(try JSONValue.parse(message.value)).isEmpty, "\(String(decoding: message.value, as: UTF8.self))")
            #expect(message.key == Array("alice".utf8) && message.timestampMilliseconds == 1_795_000_000_000)
            #expect(try JSONDecoder().decode(ScoreEvent.self, from: Data(message.value)) == event)
        }
    }
}
