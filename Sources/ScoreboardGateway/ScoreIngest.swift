import Crypto
import Foundation
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
        /// The score-events topic's value schema: every event is checked against it before it is published.
        public var scoreEvent: JSONSchema

        public init(scoreRequest: JSONSchema, batchRequest: JSONSchema, scoreEvent: JSONSchema) {
            self.scoreRequest = scoreRequest
            self.batchRequest = batchRequest
            self.scoreEvent = scoreEvent
        }
    }

    public let configuration: GatewayConfiguration
    public let actions: ActionCatalog
    public let actionTokenKeys: ActionTokenKeys
    public let schemas: Schemas
    public let authenticator: JWTAuthenticator
    public let guarding: IngestGuard
    public let publisher: EventPublisher
    public let rejections: RejectionLog
    /// The clock, injectable for tests of expiry.
    public let now: @Sendable () -> Timestamp

    public init(
        configuration: GatewayConfiguration, actions: ActionCatalog, actionTokenKeys: ActionTokenKeys, schemas: Schemas,
        authenticator: JWTAuthenticator, redis: RedisConnectionPool, publisher: EventPublisher, rejections: RejectionLog,
        now: @escaping @Sendable () -> Timestamp = { Timestamp.now() }
    ) {
        self.configuration = configuration
        self.actions = actions
        self.actionTokenKeys = actionTokenKeys
        self.schemas = schemas
        self.authenticator = authenticator
        self.guarding = IngestGuard(redis: redis)
        self.publisher = publisher
        self.rejections = rejections
        self.now = now
    }

    // MARK: - Request bodies

    struct ScoreRequest: Decodable {
        var action: String
        var actionToken: String
        var idempotencyKey: String
    }

    struct BatchRequest: Decodable {
        struct Item: Decodable {
            var userId: String
            var action: String
            var idempotencyKey: String
            var region: String?
            var guild: String?
        }
        var events: [Item]
    }

    public struct IssuedActionToken: Codable, Sendable {
        public var action: String
        public var actionToken: String
        public var expiresAt: Int64
    }

    // MARK: - Handlers

    /// `POST /v1/actions/{action}/token`.
    public func issueToken(action: String, request: Request, context: ScoreboardRequestContext) async throws -> Response {
        let identity = try await authenticate(request, context: context, roles: [.player])
        guard actions.actions[action] != nil else {
            throw reject(Problem(.unknownAction, detail: "no action \(action)"), identity: identity, action: action, context: context)
        }
        let now = now()
        let token = ActionToken.mint(userID: identity.userID, action: action, now: now, keys: actionTokenKeys)
        return try jsonResponse(
            IssuedActionToken(action: action, actionToken: token, expiresAt: now.millisecondsSinceEpoch + ActionToken.lifetimeMilliseconds),
            status: .created)
    }

    /// `POST /v1/scores`.
    public func score(request: Request, context: ScoreboardRequestContext) async throws -> Response {
        var request = request
        let identity = try await authenticate(request, context: context, roles: [.player])
        let body: ScoreRequest
        do {
            body = try await decodeValidated(ScoreRequest.self, from: &request, schema: schemas.scoreRequest, limit: configuration.maxBodyBytes)
        } catch let problem as Problem {
            throw reject(problem, identity: identity, action: nil, context: context)
        }
        guard let definition = actions.actions[body.action] else {
            throw reject(Problem(.unknownAction, detail: "no action \(body.action)"), identity: identity, action: body.action, context: context)
        }
        let fingerprint = "\(body.action)|\(body.actionToken)"
        let item = Item(
            userID: identity.userID, action: body.action, definition: definition, idempotencyKey: body.idempotencyKey,
            region: identity.region, guild: identity.guild, fingerprint: fingerprint, token: body.actionToken, source: .player)
        switch try await ingest([item], clientIP: context.clientIP).first! {
        case .success(let answer):
            return try jsonResponse(answer, status: .accepted)
        case .failure(let problem):
            throw reject(problem, identity: identity, action: body.action, context: context)
        }
    }

    /// `POST /v1/events:batch`: one result per item, in order; the request as a whole only fails for
    /// authentication, a malformed body, or when the broker acknowledged none of it.
    public func batch(request: Request, context: ScoreboardRequestContext) async throws -> Response {
        var request = request
        let identity = try await authenticate(request, context: context, roles: [.gameServer])
        let body: BatchRequest
        do {
            body = try await decodeValidated(BatchRequest.self, from: &request, schema: schemas.batchRequest, limit: configuration.maxBatchBodyBytes)
        } catch let problem as Problem {
            throw reject(problem, identity: identity, action: nil, context: context)
        }
        guard body.events.count <= configuration.maxBatchItems else {
            throw reject(Problem(.bodyTooLarge, detail: "at most \(configuration.maxBatchItems) events"), identity: identity, action: nil, context: context)
        }
        var items: [Item?] = []
        var results: [BatchResult?] = Array(repeating: nil, count: body.events.count)
        for (index, event) in body.events.enumerated() {
            if let definition = actions.actions[event.action] {
                items.append(Item(
                    userID: event.userId, action: event.action, definition: definition, idempotencyKey: event.idempotencyKey,
                    region: event.region, guild: event.guild, fingerprint: "\(event.action)|\(event.region ?? "")|\(event.guild ?? "")",
                    token: nil, source: .gameServer))
            } else {
                items.append(nil)
                results[index] = BatchResult(problem: Problem(.unknownAction, detail: "no action \(event.action)"))
            }
        }
        let outcomes = try await ingest(items.compactMap { $0 }, clientIP: nil)
        var next = outcomes.makeIterator()
        for index in results.indices where results[index] == nil {
            switch next.next()! {
            case .success(let answer): results[index] = BatchResult(answer: answer)
            case .failure(let problem):
                results[index] = BatchResult(problem: problem)
                record(problem, userID: body.events[index].userId, action: body.events[index].action, context: context)
            }
        }
        let final = results.map { $0! }
        if !final.isEmpty, final.allSatisfy({ $0.problem?.kind == .brokerUnavailable }) {
            throw Problem(.brokerUnavailable, detail: "no event was acknowledged", retryAfter: configuration.unavailableRetryAfterSeconds)
        }
        return try jsonResponse(BatchResponse(results: final.map(\.json)), status: .ok)
    }

    struct BatchResult {
        var answer: AcceptedScore?
        var problem: Problem?
        init(answer: AcceptedScore) { self.answer = answer }
        init(problem: Problem) { self.problem = problem }

        var json: BatchResponse.Item {
            if let answer { return BatchResponse.Item(status: 202, accepted: answer, problem: nil) }
            let problem = problem!
            return BatchResponse.Item(status: problem.status.code, accepted: nil, problem: .init(type: problem.kind.uri, detail: problem.detail, retryAfter: problem.retryAfter))
        }
    }

    public struct BatchResponse: Codable, Sendable {
        public struct Item: Codable, Sendable {
            public struct ProblemSummary: Codable, Sendable {
                public var type: String
                public var detail: String?
                public var retryAfter: Int?
            }
            public var status: Int
            public var accepted: AcceptedScore?
            public var problem: ProblemSummary?
        }
        public var results: [Item]
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

    /// Guards each item, publishes the admitted ones together, and answers per item.
    func ingest(_ items: [Item], clientIP: String?) async throws -> [Result<AcceptedScore, Problem>] {
        var results = [Result<AcceptedScore, Problem>?](repeating: nil, count: items.count)
        var admitted: [(index: Int, admitted: Admitted)] = []
        let now = now()
        try await withThrowingTaskGroup(of: (Int, Admission).self) { group in
            for (index, item) in items.enumerated() {
                group.addTask { (index, try await self.admit(item, clientIP: clientIP, now: now)) }
            }
            for try await (index, admission) in group {
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

    /// The event id is derived from the user and the idempotency key (a UUID version 8 over SHA-256), not drawn at
    /// random: if a gateway dies after the broker took an event but before the answer was stored, the client's retry
    /// publishes the *same* event id again, and the workers' deduplication by event id absorbs it.
    public static func eventID(userID: String, idempotencyKey: String) -> String {
        var bytes = Array(SHA256.hash(data: Array("\(userID)\n\(idempotencyKey.lowercased())".utf8)).prefix(16))
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
            occurredAt: now, region: item.region, guild: item.guild, idempotencyKey: item.idempotencyKey.lowercased(), source: item.source)
        // The event must match its topic's schema; a violation here is our bug or a bad token claim, never published.
        let value = try Self.eventEncoder.encode(event)
        let violations = schemas.scoreEvent.validate(try JSONDecoder().decode(JSONValue.self, from: value))
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
            throw reject(problem, identity: nil, action: nil, context: context)
        }
    }

    /// Reads the body as JSON, checks it against `schema` (every violation reported), then decodes it.
    private func decodeValidated<T: Decodable>(_ type: T.Type, from request: inout Request, schema: JSONSchema, limit: Int) async throws -> T {
        let value = try await request.decodeJSON(JSONValue.self, limit: limit)
        let violations = schema.validate(value)
        guard violations.isEmpty else { throw Problem(.invalidBody, errors: violations.map(\.description)) }
        do {
            return try JSONDecoder().decode(T.self, from: JSONEncoder().encode(value))
        } catch {
            throw Problem(.invalidBody, detail: "\(error)")
        }
    }

    /// Records a refusal on the rejections topic and returns the problem to throw.
    private func reject(_ problem: Problem, identity: Identity?, action: String?, context: ScoreboardRequestContext) -> Problem {
        record(problem, userID: identity?.userID, action: action, context: context)
        return problem
    }

    private func record(_ problem: Problem, userID: String?, action: String?, context: ScoreboardRequestContext) {
        rejections.record(Rejection(
            rejectionID: UUID().uuidString.lowercased(), reason: problem.kind.rawValue, userID: userID, clientIP: context.clientIP,
            action: action, occurredAt: now(), detail: problem.detail.map { String($0.prefix(1000)) }))
    }
}
