import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import ScoreboardCore
import ScoreboardHTTP

/// Fraud review's store (PostgreSQL for the records, Redis for what the gateway reads): the push role's admin
/// endpoints reach it through this port only. The adapter composes both (ScoreboardCLI/PushPortAdapters.swift).
public protocol FraudReviews: Sendable {
    /// One page of flags with their reviews, in detection order.
    func flags(_ query: FraudFlagQuery) async throws -> [ReviewedFraudFlag]

    /// Reviews a flag, once: confirm bans the user (refused by the gateway from then on, removed from every board in
    /// Redis and PostgreSQL), dismiss closes the flag (the adaptive limit ends). Appends the audit entry.
    /// - Throws: ``FraudReviewRefusal`` when the flag does not exist or was reviewed already (nothing changed).
    func review(flagID: String, decision: FraudReviewDecision, note: String, reviewer: String, at: Timestamp) async throws -> ReviewedFraudFlag

    /// The audit log, oldest first.
    func audit(userID: String?, from: Int64?, to: Int64?, limit: Int) async throws -> [FraudAuditEntry]

    /// The user's most recent events, newest first (for the review feed).
    func recentEvents(userID: String, limit: Int) async throws -> [ScoreEvent]
}

/// `GET /v1/admin/fraud-flags`, `POST /v1/admin/fraud-flags/{id}/review`, `GET /v1/admin/audit`: admins only (a player
/// or a game server gets 403 forbidden-role). Bad input is a problem+json with a stable type and changes nothing; a
/// store that does not answer is 503 with Retry-After.
struct FraudReviewRoutes: Sendable {
    let reviews: (any FraudReviews)?
    let feed: FraudFeed?
    let authenticator: JWTAuthenticator
    let now: @Sendable () -> Timestamp

    /// Largest review body, and longest note (characters).
    static let maxReviewBodyBytes = 8 * 1024
    static let maxNoteLength = 1_000
    static let maxPageSize = 200
    static let maxAuditPageSize = 1_000

    func add(to router: Router<PushRequestContext>) {
        router.get("/v1/admin/fraud-flags") { request, context in try await self.list(request, context) }
        router.post("/v1/admin/fraud-flags/:flagId/review") { request, context in try await self.review(request, context) }
        router.get("/v1/admin/audit") { request, context in try await self.audit(request, context) }
        router.get("/v1/admin/fraud-flags/stream") { request, context in try await self.stream(request, context) }
    }

    /// The review feed over SSE (``FraudFeed``): a snapshot or the flags after `Last-Event-ID` / `since`, then each
    /// flag as it is published, and comment heartbeats. The stream ends when the feed drops a client too far behind
    /// (it resumes with its last id) and at shutdown.
    func stream(_ request: Request, _ context: PushRequestContext) async throws -> Response {
        _ = try await authenticator.authenticate(request, roles: [.admin])
        let lastEventID = request.headers[HTTPField.Name("Last-Event-ID")!] ?? request.uri.queryParameters["since"].map(String.init)
        var since: FraudFeedPosition?
        if let lastEventID, !lastEventID.isEmpty {
            guard let position = FraudFeedPosition(lastEventID) else {
                throw Problem(.invalidParameter, detail: "Last-Event-ID / since must be an id this feed gave (0-12.1-5)")
            }
            since = position
        }
        guard let feed else { throw Problem.unavailable("the fraud feed") }
        let position = since
        let items = try await reading { try await feed.subscribe(since: position) }
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache", HTTPField.Name("X-Accel-Buffering")!: "no"],
            body: ResponseBody { writer in
                try await writer.write(ByteBuffer(staticString: ": connected\n\n"))
                for await item in items {
                    switch item {
                    case .event(let event): try await writer.write(event)
                    case .heartbeat: try await writer.write(ByteBuffer(staticString: ": heartbeat\n\n"))
                    }
                }
                try await writer.finish(nil)
            })
    }

    struct FlagPage: Encodable {
        var flags: [ReviewedFraudFlag]
        var nextCursor: String?
    }

    struct AuditPage: Encodable {
        var entries: [FraudAuditEntry]
    }

    struct ReviewRequest: Decodable {
        var decision: FraudReviewDecision?
        var note: String?
    }

    func list(_ request: Request, _ context: PushRequestContext) async throws -> Response {
        _ = try await authenticator.authenticate(request, roles: [.admin])
        let parameters = request.uri.queryParameters
        var query = FraudFlagQuery(limit: try PushGateway.integer(request, "limit", default: 50, range: 1...Self.maxPageSize))
        if let status = parameters["status"] {
            guard let parsed = FraudFlagStatus(rawValue: String(status)) else {
                throw Problem(.invalidParameter, detail: "status must be one of \(FraudFlagStatus.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            query.status = parsed
        }
        if let rule = parameters["rule"] { query.rule = try PushGateway.identifier(String(rule), name: "rule") }
        if let user = parameters["userId"] { query.userID = try PushGateway.identifier(String(user), name: "userId") }
        query.from = try Self.milliseconds(request, "from")
        query.to = try Self.milliseconds(request, "to")
        if let cursor = parameters["cursor"] {
            guard let parsed = FraudFlagCursor(String(cursor)) else { throw Problem(.invalidParameter, detail: "cursor is not one this API gave") }
            query.after = parsed
        }
        // One more than asked: whether there is a next page.
        var wanted = query
        wanted.limit += 1
        let asked = wanted
        let flags = try await reading { try await store().flags(asked) }
        let page = Array(flags.prefix(query.limit))
        let next = flags.count > query.limit ? page.last.map { FraudFlagCursor(detectedAt: $0.flag.detectedAt, flagID: $0.flag.flagID).text } : nil
        return try jsonResponse(FlagPage(flags: page, nextCursor: next))
    }

    func review(_ request: Request, _ context: PushRequestContext) async throws -> Response {
        var request = request
        let identity = try await authenticator.authenticate(request, roles: [.admin])
        let flagID = try context.parameters.require("flagId")
        guard flagID.count <= 64, UUID(uuidString: flagID) != nil else {
            throw Problem(.invalidParameter, detail: "flagId must be a flag's id (a UUID)")
        }
        let body = try await request.decodeJSON(ReviewRequest.self, limit: Self.maxReviewBodyBytes)
        guard let decision = body.decision else {
            throw Problem(.invalidBody, errors: ["decision: required, confirm or dismiss"])
        }
        let note = body.note ?? ""
        guard note.count <= Self.maxNoteLength else {
            throw Problem(.invalidBody, errors: ["note: at most \(Self.maxNoteLength) characters, got \(note.count)"])
        }
        do {
            let reviewed = try await reading {
                try await store().review(flagID: flagID.lowercased(), decision: decision, note: note, reviewer: identity.userID, at: now())
            }
            return try jsonResponse(reviewed)
        } catch let refusal as FraudReviewRefusal {
            switch refusal {
            case .unknownFlag: throw Problem(.unknownFraudFlag, detail: "no fraud flag \(flagID)")
            case .alreadyReviewed(let status): throw Problem(.fraudFlagAlreadyReviewed, detail: "the flag is \(status.rawValue) already")
            }
        }
    }

    func audit(_ request: Request, _ context: PushRequestContext) async throws -> Response {
        _ = try await authenticator.authenticate(request, roles: [.admin])
        let userID: String? = try request.uri.queryParameters["userId"].map { try PushGateway.identifier(String($0), name: "userId") }
        let limit = try PushGateway.integer(request, "limit", default: 100, range: 1...Self.maxAuditPageSize)
        let (from, to) = (try Self.milliseconds(request, "from"), try Self.milliseconds(request, "to"))
        let entries = try await reading { try await store().audit(userID: userID, from: from, to: to, limit: limit) }
        return try jsonResponse(AuditPage(entries: entries))
    }

    func store() throws -> any FraudReviews {
        guard let reviews else { throw Problem.unavailable("fraud review") }
        return reviews
    }

    /// Bound on one call to the store: a server that stops answering is a 503, not a hung request.
    static let storeDeadline: Duration = .seconds(5)

    /// A read or write of the store, within the deadline: its refusals and problems pass, any other failure (an
    /// outage, the deadline) is 503 with Retry-After.
    func reading<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        do { return try await withTimeout(Self.storeDeadline, body) } catch let problem as Problem { throw problem } catch let refusal as FraudReviewRefusal {
            throw refusal
        } catch {
            throw Problem.unavailable("the fraud review store")
        }
    }

    /// A time parameter: milliseconds since the epoch.
    static func milliseconds(_ request: Request, _ name: String) throws -> Int64? {
        guard let text = request.uri.queryParameters[Substring(name)] else { return nil }
        guard let value = Int64(String(text)), value >= 0, value <= 4_102_444_800_000 else {
            throw Problem(.invalidParameter, detail: "\(name) must be milliseconds since the epoch, up to the year 2100")
        }
        return value
    }
}
