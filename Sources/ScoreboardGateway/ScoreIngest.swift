import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Metrics
import ScoreboardCore
import ScoreboardHTTP
import ScoreboardKafka
import ScoreboardRedis

/// The gateway's request handling, free of routing: authenticate, validate, guard, publish, answer.
public struct ScoreIngest: Sendable {
    public struct Schemas: Sendable {
        public var scoreRequest: JSONSchema
        public var batchRequest: JSONSchema
        public var revocationRequest: JSONSchema
        /// The score-events topic's value schema: every event is checked against it before it is published.
        public var scoreEvent: JSONSchema

        public init(scoreRequest: JSONSchema, batchRequest: JSONSchema, revocationRequest: JSONSchema, scoreEvent: JSONSchema) {
            self.scoreRequest = scoreRequest
            self.batchRequest = batchRequest
            self.revocationRequest = revocationRequest
            self.scoreEvent = scoreEvent
        }
    }

    public let configuration: GatewayConfiguration
    public let actions: ActionCatalog
    public let actionTokenKeys: ActionTokenKeys
    public let schemas: Schemas
    public let authenticator: JWTAuthenticator
    public let guarding: IngestGuard
    public let publisher: any ScoreEventPublishing
    public let rejections: RejectionLog
    let logger: Logger
    /// The clock, injectable for tests of expiry.
    public let now: @Sendable () -> Timestamp

    public init(
        configuration: GatewayConfiguration, actions: ActionCatalog, actionTokenKeys: ActionTokenKeys, schemas: Schemas,
        authenticator: JWTAuthenticator, redis: RedisConnectionPool, publisher: any ScoreEventPublishing, rejections: RejectionLog,
        logger: Logger = Logger(label: "scoreboard.gateway"), now: @escaping @Sendable () -> Timestamp = { Timestamp.now() }
    ) {
        self.configuration = configuration
        self.actions = actions
        self.actionTokenKeys = actionTokenKeys
        self.schemas = schemas
        self.authenticator = authenticator
        self.guarding = IngestGuard(redis: redis)
        self.publisher = publisher
        self.rejections = rejections
        self.logger = logger
        self.now = now
    }

    // MARK: - Request bodies

    struct ScoreRequest: Decodable {
        var action: String
        var actionToken: String
        var idempotencyKey: String
    }

    struct Revocation: Decodable {
        var jti: String
        var expiresAt: Int64
    }

    public struct IssuedActionToken: Codable, Sendable {
        public var action: String
        public var actionToken: String
        public var expiresAt: Int64
    }

    /// One canonical spelling of an idempotency key, used for every purpose (the Redis claim, the event id, the
    /// event): the schema admits a UUID in either case, and two spellings of one key must be one request.
    static func canonicalIdempotencyKey(_ key: String) -> String { key.lowercased() }

    // MARK: - Handlers

    /// `POST /v1/actions/{action}/token`.
    public func issueToken(action: String, request: Request, context: ScoreboardRequestContext) async throws -> Response {
        let identity = try await authenticate(request, context: context, roles: [.player])
        let clientIP = clientIP(request, context: context)
        if let problem = ScoreEvent.identifierProblem(action) {
            throw reject(Problem(.invalidParameter, detail: "action \(problem)"), userID: identity.userID, action: nil, clientIP: clientIP)
        }
        guard actions.actions[action] != nil else {
            throw reject(Problem(.unknownAction, detail: "no action \(action)"), userID: identity.userID, action: action, clientIP: clientIP)
        }
        let now = now()
        switch try await guarding.checkMint(
            userID: identity.userID, perMinute: configuration.actionTokensPerUserPerMinute, requestID: UUID().uuidString, now: now)
        {
        case .allowed: break
        case .banned:
            throw reject(Problem(.banned, detail: "user \(identity.userID) is banned"), userID: identity.userID, action: action, clientIP: clientIP)
        case .rateLimited(let wait):
            throw reject(
                Problem(.rateLimited, detail: "limit action-tokens", retryAfter: Int((wait + 999) / 1000)), userID: identity.userID, action: action,
                clientIP: clientIP)
        }
        let token = ActionToken.mint(userID: identity.userID, action: action, now: now, keys: actionTokenKeys)
        return try jsonResponse(
            IssuedActionToken(action: action, actionToken: token, expiresAt: now.millisecondsSinceEpoch + ActionToken.lifetimeMilliseconds),
            status: .created)
    }

    /// `POST /v1/scores`.
    public func score(request: Request, context: ScoreboardRequestContext) async throws -> Response {
        var request = request
        let identity = try await authenticate(request, context: context, roles: [.player])
        let clientIP = clientIP(request, context: context)
        let body: ScoreRequest
        do {
            body = try await decodeValidated(ScoreRequest.self, from: &request, schema: schemas.scoreRequest, limit: configuration.maxBodyBytes)
        } catch let problem as Problem {
            throw reject(problem, userID: identity.userID, action: nil, clientIP: clientIP)
        }
        guard let definition = actions.actions[body.action] else {
            throw reject(Problem(.unknownAction, detail: "no action \(body.action)"), userID: identity.userID, action: body.action, clientIP: clientIP)
        }
        let fingerprint = "\(body.action)|\(body.actionToken)"
        let item = Item(
            userID: identity.userID, action: body.action, definition: definition, idempotencyKey: Self.canonicalIdempotencyKey(body.idempotencyKey),
            region: identity.region, guild: identity.guild, fingerprint: fingerprint, token: body.actionToken, source: .player)
        switch await ingest([item], clientIP: clientIP).first! {
        case .success(let answer):
            return try jsonResponse(answer, status: .accepted)
        case .failure(let problem) where problem.status.code >= 500:
            throw problem  // an outage, not a refusal of the client
        case .failure(let problem):
            throw reject(problem, userID: identity.userID, action: body.action, clientIP: clientIP)
        }
    }

    /// `POST /v1/events:batch`: one result per item, in order. Each item is checked against the item schema on its
    /// own, so one bad item spoils nothing else; the request as a whole only fails for authentication, a body that
    /// is not a batch at all, or when every item failed for an outage.
    public func batch(request: Request, context: ScoreboardRequestContext) async throws -> Response {
        var request = request
        let identity = try await authenticate(request, context: context, roles: [.gameServer])
        let clientIP = clientIP(request, context: context)
        func refuse(_ problem: Problem) -> Problem { reject(problem, userID: identity.userID, action: nil, clientIP: clientIP) }
        let value: JSONValue
        do {
            value = try await request.decodeJSONValue(limit: configuration.maxBatchBodyBytes)
        } catch let problem as Problem {
            throw refuse(problem)
        }
        if let events = value["events"]?.arrayValue, events.count > configuration.maxBatchItems {
            // 400, not 413: the body may be small (a thousand nulls); it is the batch that is too long for the schema.
            throw refuse(Problem(.invalidBody, detail: "at most \(configuration.maxBatchItems) events in a batch"))
        }
        var itemViolations: [Int: [String]] = [:]
        var envelopeViolations: [String] = []
        for violation in schemas.batchRequest.validate(value) {
            if let index = Self.batchItemIndex(violation.pointer) {
                itemViolations[index, default: []].append(violation.description)
            } else {
                envelopeViolations.append(violation.description)
            }
        }
        guard envelopeViolations.isEmpty, let events = value["events"]?.arrayValue else {
            throw refuse(Problem(.invalidBody, errors: envelopeViolations))
        }

        var items: [Item] = []
        var results: [Result<AcceptedScore, Problem>?] = Array(repeating: nil, count: events.count)
        for (index, event) in events.enumerated() {
            let userID = event["userId"]?.stringValue, action = event["action"]?.stringValue
            if let violations = itemViolations[index] {
                results[index] = .failure(Problem(.invalidBody, errors: violations))
            } else if let userID, let action, let key = event["idempotencyKey"]?.stringValue {
                if let definition = actions.actions[action] {
                    let region = event["region"]?.stringValue, guild = event["guild"]?.stringValue
                    items.append(Item(
                        userID: userID, action: action, definition: definition, idempotencyKey: Self.canonicalIdempotencyKey(key),
                        region: region, guild: guild, fingerprint: "\(action)|\(region ?? "")|\(guild ?? "")", token: nil, source: .gameServer))
                    continue
                }
                results[index] = .failure(Problem(.unknownAction, detail: "no action \(action)"))
            } else {
                results[index] = .failure(Problem(.invalidBody, errors: ["/events/\(index): is not a score"]))  // the schema requires these
            }
            if case .failure(let problem) = results[index] {
                // A user id that failed its own check is not repeated into the log.
                let knownUser = userID.flatMap { ScoreEvent.identifierProblem($0) == nil ? $0 : nil }
                record(problem, userID: knownUser, action: nil, clientIP: clientIP)
            }
        }
        var outcomes = await ingest(items, clientIP: nil).makeIterator()
        for index in results.indices where results[index] == nil {
            let outcome = outcomes.next()!
            results[index] = outcome
            if case .failure(let problem) = outcome, problem.status.code < 500 {
                record(problem, userID: events[index]["userId"]?.stringValue, action: events[index]["action"]?.stringValue, clientIP: clientIP)
            }
        }
        let final = results.map { $0! }
        if !final.isEmpty, final.allSatisfy({ result in
            if case .failure(let problem) = result { return problem.status == .serviceUnavailable } else { return false }
        }), case .failure(let first) = final[0] {
            throw Problem(first.kind, detail: "no event was accepted", retryAfter: first.retryAfter)
        }
        return try jsonResponse(BatchResponse(results: final.map(BatchResponse.Item.init)), status: .ok)
    }

    /// The item a violation of the batch schema belongs to: `/events/3/userId` and `/events/3` are item 3's; anything
    /// else (`/`, `/events`) is the envelope's.
    static func batchItemIndex(_ pointer: String) -> Int? {
        guard pointer.hasPrefix("/events/") else { return nil }
        let rest = pointer.dropFirst("/events/".count)
        let digits = rest.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty, digits.count == rest.count || rest.dropFirst(digits.count).hasPrefix("/") else { return nil }
        return Int(digits)
    }

    public struct BatchResponse: Codable, Sendable {
        public struct Item: Codable, Sendable {
            public struct ProblemSummary: Codable, Sendable {
                public var type: String
                public var detail: String?
                public var errors: [String]?
                public var retryAfter: Int?
            }
            public var status: Int
            public var accepted: AcceptedScore?
            public var problem: ProblemSummary?

            init(_ result: Result<AcceptedScore, Problem>) {
                switch result {
                case .success(let answer):
                    self.init(status: 202, accepted: answer, problem: nil)
                case .failure(let problem):
                    self.init(status: problem.status.code, accepted: nil, problem: ProblemSummary(
                        type: problem.kind.uri, detail: problem.detail, errors: problem.errors.isEmpty ? nil : problem.errors,
                        retryAfter: problem.retryAfter))
                }
            }

            init(status: Int, accepted: AcceptedScore?, problem: ProblemSummary?) {
                self.status = status
                self.accepted = accepted
                self.problem = problem
            }
        }
        public var results: [Item]
    }

    // MARK: - Operators

    /// `PUT` / `DELETE /v1/admin/bans/{userId}`.
    public func setBan(userID: String, banned: Bool, request: Request, context: ScoreboardRequestContext) async throws -> Response {
        _ = try await authenticator.authenticate(request, roles: [.admin])
        if let problem = ScoreEvent.identifierProblem(userID) { throw Problem(.invalidParameter, detail: "userId \(problem)") }
        if banned {
            try await guarding.redis.send(["SET", IngestGuard.banKey(userID: userID), "1"])
        } else {
            try await guarding.redis.send(["DEL", IngestGuard.banKey(userID: userID)])
        }
        return Response(status: .noContent)
    }

    /// `POST /v1/admin/revocations`: the `jti` is refused until the token's own expiry, given in seconds since the
    /// epoch (at most the maximum token lifetime away: a token cannot live longer, so neither need its entry).
    public func revoke(request: Request, context: ScoreboardRequestContext) async throws -> Response {
        var request = request
        _ = try await authenticator.authenticate(request, roles: [.admin])
        let revocation = try await decodeValidated(
            Revocation.self, from: &request, schema: schemas.revocationRequest, limit: configuration.maxAdminBodyBytes)
        let nowSeconds = now().millisecondsSinceEpoch / 1000
        // Both are bounded (the schema caps expiresAt at 2100, which also refuses milliseconds), so this arithmetic
        // cannot overflow. No token lives longer than the maximum lifetime, so neither need its entry: a later
        // expiry is kept for that long.
        let longest = authenticator.configuration.maximumLifetime.components.seconds + authenticator.configuration.leeway.components.seconds
        let secondsLeft = min(revocation.expiresAt - nowSeconds, longest)
        // A token past its expiry fails on `exp` already: nothing to store.
        if secondsLeft > 0 {
            try await guarding.redis.send(["SET", JWTAuthenticator.revocationKey(tokenID: revocation.jti), "1", "EX", String(secondsLeft)])
        }
        return Response(status: .noContent)
    }

    // MARK: - The pipeline shared by single and batch scores

    struct Item: Sendable {
        var userID: String
        var action: String
        var definition: ActionDefinition
        var idempotencyKey: String
        var region: String?
        var guild: String?
        var fingerprint: String
        /// The action token, for player scores; game servers have none.
        var token: String?
        var source: ScoreEvent.Source
    }

    /// Guards each item, publishes the admitted ones together, and answers per item. Nothing here throws: an item
    /// whose checks fail (Redis down for it, say) gets its own problem, and the others go on. So no item's claim is
    /// left behind by another's failure; a claimed item is either published or released by `settle`.
    func ingest(_ items: [Item], clientIP: String?) async -> [Result<AcceptedScore, Problem>] {
        var results = [Result<AcceptedScore, Problem>?](repeating: nil, count: items.count)
        var admitted: [(index: Int, admitted: Admitted)] = []
        let now = now()
        await withTaskGroup(of: (Int, Admission).self) { group in
            for (index, item) in items.enumerated() {
                group.addTask {
                    do {
                        return (index, try await self.admit(item, clientIP: clientIP, now: now))
                    } catch {
                        return (index, .refused(self.problem(for: error)))
                    }
                }
            }
            for await (index, admission) in group {
                switch admission {
                case .repeated(let answer): results[index] = .success(answer)
                case .admitted(let entry): admitted.append((index, entry))
                case .refused(let problem): results[index] = .failure(problem)
                }
            }
        }
        guard !admitted.isEmpty else { return results.map { $0! } }

        let messages = admitted.map { entry in
            KafkaProducerMessage(
                topic: configuration.topics.scoreEvents, key: Array(entry.admitted.event.partitionKey.utf8), value: entry.admitted.value,
                timestampMilliseconds: entry.admitted.event.occurredAt.millisecondsSinceEpoch)
        }
        let settledEvents = admitted
        let guarding = self.guarding
        let reports = await publisher.publish(messages, deadline: configuration.publishDeadline) { reports in
            // Runs once every report is in, even after the request gave up waiting: record the real outcome.
            for (entry, report) in zip(settledEvents, reports) {
                let item = items[entry.index]
                do {
                    switch report {
                    case .success(let delivery):
                        try await guarding.complete(
                            userID: item.userID, idempotencyKey: item.idempotencyKey, fingerprint: item.fingerprint,
                            answer: Self.answer(entry.admitted.event, delivery))
                    case .failure:
                        try await guarding.release(userID: item.userID, idempotencyKey: item.idempotencyKey, tokenNonce: entry.admitted.nonce)
                    }
                } catch {
                    // The pending claim expires on its own; until then a retry is told the key is in use.
                }
            }
        }
        for (position, entry) in admitted.enumerated() {
            if let report = reports?[position], case .success(let delivery) = report {
                results[entry.index] = .success(Self.answer(entry.admitted.event, delivery))
                Counter(label: "gateway_events_accepted_total", dimensions: [("action", entry.admitted.event.action)]).increment()
            } else {
                results[entry.index] = .failure(Problem(
                    .brokerUnavailable, detail: reports == nil ? "the broker did not acknowledge in time" : "the broker refused the event",
                    retryAfter: configuration.unavailableRetryAfterSeconds))
            }
        }
        return results.map { $0! }
    }

    /// The answer for an item whose checks threw: a 503 for an outage, else a 500 whose cause is logged, not sent.
    func problem(for error: any Error) -> Problem {
        if let problem = error as? Problem { return problem }
        if let problem = Problem(dependencyError: error) {
            logger.warning("dependency unavailable", metadata: ["error": "\(String(reflecting: error))"])
            return problem
        }
        logger.error("ingest check failed", metadata: ["error": "\(String(reflecting: error))"])
        return Problem(.internalError)
    }

    /// The event id is derived from the user and the idempotency key (a UUID version 8 over SHA-256), not drawn at
    /// random: if a gateway dies after the broker took an event but before the answer was stored, the client's retry
    /// publishes the *same* event id again, and the workers' deduplication by event id absorbs it.
    public static func eventID(userID: String, idempotencyKey: String) -> String {
        var bytes = Array(SHA256.hash(data: Array("\(userID)\n\(canonicalIdempotencyKey(idempotencyKey))".utf8)).prefix(16))
        bytes[6] = (bytes[6] & 0x0F) | 0x80  // version 8
        bytes[8] = (bytes[8] & 0x3F) | 0x80  // RFC 9562 variant
        let hex = bytes.map { String(format: "%02x", $0) }.joined()
        let parts = [hex.prefix(8), hex.dropFirst(8).prefix(4), hex.dropFirst(12).prefix(4), hex.dropFirst(16).prefix(4), hex.dropFirst(20)]
        return parts.map(String.init).joined(separator: "-")
    }

    static func answer(_ event: ScoreEvent, _ delivery: KafkaDeliveryReport) -> AcceptedScore {
        AcceptedScore(
            eventID: event.eventID, partition: delivery.partition, offset: delivery.offset, userID: event.userID, action: event.action,
            points: event.points, occurredAt: event.occurredAt.millisecondsSinceEpoch)
    }

    /// An event that passed every check, with the JSON it is published as (encoded once, validated from those
    /// bytes) and the nonce of its action token.
    struct Admitted: Sendable {
        var event: ScoreEvent
        var value: [UInt8]
        var nonce: String?
    }

    enum Admission: Sendable {
        /// The idempotency key was answered before: the same answer again.
        case repeated(AcceptedScore)
        case admitted(Admitted)
        case refused(Problem)
    }

    static let eventEncoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return encoder
    }()

    /// One item's checks, cheapest first.
    private func admit(_ item: Item, clientIP: String?, now: Timestamp) async throws -> Admission {
        func fail(_ problem: Problem) -> Admission { .refused(problem) }
        let (banned, record) = try await guarding.precheck(userID: item.userID, idempotencyKey: item.idempotencyKey)
        if banned { return fail(Problem(.banned, detail: "user \(item.userID) is banned")) }
        if let record {
            guard record.fingerprint == item.fingerprint else {
                return fail(Problem(.idempotencyKeyReused, detail: "the key was first used for another request"))
            }
            if let answer = record.answer { return .repeated(answer) }
            return fail(Problem(.idempotencyKeyInUse, detail: "the first request with this key is still being published"))
        }
        var nonce: String?
        if let token = item.token {
            switch ActionToken.verify(token, userID: item.userID, action: item.action, now: now, keys: actionTokenKeys) {
            case .success(let parsed): nonce = parsed.nonce
            case .failure(.expired): return fail(Problem(.actionTokenExpired, detail: "action tokens live \(ActionToken.lifetimeMilliseconds / 1000) s"))
            case .failure(.invalid(let why)), .failure(.mismatch(let why)): return fail(Problem(.invalidActionToken, detail: why))
            }
        }
        let event = ScoreEvent(
            eventID: Self.eventID(userID: item.userID, idempotencyKey: item.idempotencyKey), userID: item.userID, action: item.action, points: item.definition.points,
            occurredAt: now, region: item.region, guild: item.guild, idempotencyKey: item.idempotencyKey, source: item.source)
        // The event must match its topic's schema; a violation here is our bug or a bad token claim, never published.
        let value = try Self.eventEncoder.encode(event)
        let violations = schemas.scoreEvent.validate(try JSONValue.parse(value))
        if !violations.isEmpty { return fail(Problem(.invalidBody, errors: violations.map(\.description))) }
        let limits = IngestGuard.limits(
            clientIP: clientIP, userID: item.userID, action: item.action, definition: item.definition, configuration: configuration, now: now)
        let outcome = try await guarding.admit(
            limits: limits, tokenNonce: nonce, userID: item.userID, idempotencyKey: item.idempotencyKey, fingerprint: item.fingerprint,
            requestID: event.eventID, now: now)
        switch outcome {
        case .admitted: return .admitted(Admitted(event: event, value: Array(value), nonce: nonce))
        case .rateLimited(let limit, let wait):
            return fail(Problem(.rateLimited, detail: "limit \(limit)", retryAfter: Int((wait + 999) / 1000)))
        case .tokenReplayed: return fail(Problem(.actionTokenReplayed))
        case .idempotencyKeyInUse: return fail(Problem(.idempotencyKeyInUse))
        }
    }

    // MARK: - Helpers

    private func authenticate(_ request: Request, context: ScoreboardRequestContext, roles: Set<Role>) async throws -> Identity {
        do {
            return try await authenticator.authenticate(request, roles: roles)
        } catch let problem as Problem {
            throw reject(problem, userID: nil, action: nil, clientIP: clientIP(request, context: context))
        }
    }

    /// The client's address: the TCP peer, or what our trusted proxies say in `X-Forwarded-For`.
    func clientIP(_ request: Request, context: ScoreboardRequestContext) -> String {
        ClientAddress.resolve(
            peer: context.clientIP, forwardedFor: request.headers[values: Self.forwardedFor], trustedProxies: configuration.trustedProxies)
    }

    static let forwardedFor = HTTPField.Name("X-Forwarded-For")!

    /// Reads the body as JSON (bounded in size and depth), checks it against `schema` (every violation reported),
    /// then decodes it.
    private func decodeValidated<T: Decodable>(_ type: T.Type, from request: inout Request, schema: JSONSchema, limit: Int) async throws -> T {
        let value = try await request.decodeJSONValue(limit: limit)
        let violations = schema.validate(value)
        guard violations.isEmpty else { throw Problem(.invalidBody, errors: violations.map(\.description)) }
        return try JSONValue.decode(T.self, from: value)
    }

    /// Records a refusal on the rejections topic and returns the problem to throw.
    private func reject(_ problem: Problem, userID: String?, action: String?, clientIP: String) -> Problem {
        record(problem, userID: userID, action: action, clientIP: clientIP)
        return problem
    }

    private func record(_ problem: Problem, userID: String?, action: String?, clientIP: String) {
        rejections.record(Rejection(
            rejectionID: UUID().uuidString.lowercased(), reason: problem.kind.rawValue, userID: userID, clientIP: clientIP,
            action: action.map { String($0.prefix(64)) }, occurredAt: now(),
            detail: (problem.detail ?? problem.errors.first).map { String($0.prefix(1000)) }))
    }
}
