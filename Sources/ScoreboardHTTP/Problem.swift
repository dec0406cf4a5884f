import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import ScoreboardRedis

/// An RFC 9457 problem: every error the HTTP roles answer is `application/problem+json` with one stable `type` per
/// cause, so clients (and the fraud rules reading the rejections topic) branch on `type`, never on wording.
public struct Problem: HTTPResponseError, Sendable {
    /// The stable causes. The raw value is the last path segment of the `type` URI; renaming one is a breaking change.
    public enum Kind: String, Sendable, CaseIterable {
        case unauthenticated
        case tokenRevoked = "token-revoked"
        case forbiddenRole = "forbidden-role"
        case banned
        case invalidBody = "invalid-body"
        case bodyTooLarge = "body-too-large"
        case unsupportedMediaType = "unsupported-media-type"
        case unknownAction = "unknown-action"
        case invalidActionToken = "invalid-action-token"
        case actionTokenExpired = "action-token-expired"
        case actionTokenReplayed = "action-token-replayed"
        case idempotencyKeyReused = "idempotency-key-reused"
        case idempotencyKeyInUse = "idempotency-key-in-use"
        case rateLimited = "rate-limited"
        case brokerUnavailable = "broker-unavailable"
        case dependencyUnavailable = "dependency-unavailable"
        case invalidParameter = "invalid-parameter"
        case notFound = "not-found"
        case methodNotAllowed = "method-not-allowed"
        case internalError = "internal-error"
        case tooManyStreams = "too-many-streams"
        case tooManySubscriptions = "too-many-subscriptions"
        case serverBusy = "server-busy"
        case headerTooLarge = "header-too-large"
        case unknownFraudFlag = "unknown-fraud-flag"
        case fraudFlagAlreadyReviewed = "fraud-flag-already-reviewed"
        case banConfirmedByReview = "ban-confirmed-by-review"

        public var status: HTTPResponse.Status {
            switch self {
            case .unauthenticated, .tokenRevoked: .unauthorized
            case .forbiddenRole, .banned, .invalidActionToken, .actionTokenExpired: .forbidden
            case .invalidBody, .invalidParameter: .badRequest
            case .bodyTooLarge: .contentTooLarge
            case .unsupportedMediaType: .unsupportedMediaType
            case .unknownAction, .notFound, .unknownFraudFlag: .notFound
            case .actionTokenReplayed, .idempotencyKeyInUse, .fraudFlagAlreadyReviewed, .banConfirmedByReview: .conflict
            case .idempotencyKeyReused: .unprocessableContent
            case .rateLimited, .tooManyStreams, .tooManySubscriptions: .tooManyRequests
            case .serverBusy: .serviceUnavailable
            case .headerTooLarge: .requestHeaderFieldsTooLarge
            case .brokerUnavailable, .dependencyUnavailable: .serviceUnavailable
            case .methodNotAllowed: .methodNotAllowed
            case .internalError: .internalServerError
            }
        }

        public var title: String {
            switch self {
            case .unauthenticated: "Missing or invalid bearer token"
            case .tokenRevoked: "The bearer token was revoked"
            case .forbiddenRole: "The token's role may not do this"
            case .banned: "The user is banned"
            case .invalidBody: "The request body is invalid"
            case .bodyTooLarge: "The request body is too large"
            case .unsupportedMediaType: "The request body must be application/json"
            case .unknownAction: "No such action in the catalog"
            case .invalidActionToken: "The action token is invalid"
            case .actionTokenExpired: "The action token has expired"
            case .actionTokenReplayed: "The action token was already used"
            case .idempotencyKeyReused: "The idempotency key was used for another request"
            case .idempotencyKeyInUse: "A request with this idempotency key is in progress"
            case .rateLimited: "Too many requests"
            case .brokerUnavailable: "The event broker is unavailable"
            case .dependencyUnavailable: "A backing service is unavailable"
            case .invalidParameter: "A parameter is invalid"
            case .notFound: "Not found"
            case .methodNotAllowed: "Method not allowed"
            case .internalError: "Internal error"
            case .tooManyStreams: "Too many open streams for this user or address"
            case .tooManySubscriptions: "Too many subscriptions on this connection"
            case .serverBusy: "The server is at capacity"
            case .headerTooLarge: "The request header is too large"
            case .unknownFraudFlag: "No such fraud flag"
            case .fraudFlagAlreadyReviewed: "The fraud flag was already reviewed"
            case .banConfirmedByReview: "The ban was confirmed by fraud review and cannot be lifted here"
            }
        }

        /// The `type` URI. It names the cause; it need not resolve.
        public var uri: String { Problem.typeBase + rawValue }
    }

    public static let typeBase = "https://scoreboard.dev/problems/"
    public static let contentType = "application/problem+json"

    public var kind: Kind
    public var detail: String?
    /// Individual problems (every invalid field of a body), as `errors`.
    public var errors: [String]
    /// Seconds, sent as `Retry-After` and as `retryAfter`.
    public var retryAfter: Int?
    /// For `method-not-allowed`: the methods the path serves, sent as `Allow`.
    public var allow: [String] = []

    public init(_ kind: Kind, detail: String? = nil, errors: [String] = [], retryAfter: Int? = nil) {
        self.kind = kind
        self.detail = detail
        self.errors = errors
        self.retryAfter = retryAfter
    }

    public var status: HTTPResponse.Status { kind.status }

    public var body: [String: JSONBodyValue] {
        var body: [String: JSONBodyValue] = [
            "type": .string(kind.uri), "title": .string(kind.title), "status": .int(status.code),
        ]
        if let detail { body["detail"] = .string(detail) }
        if !errors.isEmpty { body["errors"] = .strings(errors) }
        if let retryAfter { body["retryAfter"] = .int(retryAfter) }
        return body
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers: HTTPFields = [.contentType: Self.contentType]
        if let retryAfter { headers[.retryAfter] = String(retryAfter) }
        if !allow.isEmpty { headers[.allow] = allow.joined(separator: ", ") }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: JSONBodyValue.encode(body))))
    }
}

// MARK: - Failing dependencies

extension Problem {
    /// `Retry-After` for a backing service that is down.
    public static let dependencyRetryAfterSeconds = 2

    /// A backing service the request needs is down: a 503 to retry, naming the service but never its address or the
    /// raw error (those go to the log).
    public static func unavailable(_ dependency: String, retryAfter: Int = dependencyRetryAfterSeconds) -> Problem {
        Problem(.dependencyUnavailable, detail: "\(dependency) is unavailable", retryAfter: retryAfter)
    }

    /// The 503 for an error that says a backing service is unreachable or temporarily refusing work; `nil` for any
    /// other error (an error reply to a command we sent wrongly is our bug, not an outage).
    public init?(dependencyError error: any Error) {
        guard let error = error as? RedisError else { return nil }
        switch error.code {
        case .server:
            // Replies of a server that is up but cannot serve right now.
            let transient: Set<String> = ["LOADING", "BUSY", "MASTERDOWN", "READONLY", "OOM", "TRYAGAIN", "CLUSTERDOWN"]
            guard let prefix = error.serverErrorPrefix, transient.contains(prefix) else { return nil }
        case .unexpectedReply:
            return nil
        default:
            break  // connection, closed, timeouts: the server is out of reach
        }
        self = Problem.unavailable("redis")
    }
}

/// The few JSON shapes problem bodies use, encoded with sorted keys so answers are byte-for-byte repeatable.
public enum JSONBodyValue: Sendable, Encodable {
    case string(String), int(Int), strings([String])

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let value): try container.encode(value)
        case .int(let value): try container.encode(value)
        case .strings(let value): try container.encode(value)
        }
    }

    static func encode(_ body: [String: JSONBodyValue]) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array((try? encoder.encode(body)) ?? Data("{}".utf8))
    }
}

/// Turns every error into a problem: ours as they are, Hummingbird's (unknown route, body too large) by status, and
/// anything else into a 500 whose detail is logged but not sent.
public struct ProblemMiddleware<Context: RequestContext>: RouterMiddleware {
    public init() {}

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let problem as Problem {
            throw problem
        } catch let error as HTTPError {
            throw Problem(Self.kind(for: error.status), detail: error.body)
        } catch let error as any HTTPResponseError {
            throw Problem(Self.kind(for: error.status))
        } catch let error where Problem(dependencyError: error) != nil {
            context.logger.warning("dependency unavailable", metadata: ["error": "\(String(reflecting: error))"])
            throw Problem(dependencyError: error)!
        } catch is CancellationError {
            throw Problem(.dependencyUnavailable, detail: "the server is shutting down")
        } catch {
            context.logger.error("unhandled error", metadata: ["error": "\(String(reflecting: error))"])
            throw Problem(.internalError)
        }
    }

    static func kind(for status: HTTPResponse.Status) -> Problem.Kind {
        switch status {
        case .notFound: .notFound
        case .methodNotAllowed: .methodNotAllowed
        case .contentTooLarge: .bodyTooLarge
        case .unauthorized: .unauthenticated
        case .badRequest: .invalidParameter
        case .unsupportedMediaType: .unsupportedMediaType
        case .serviceUnavailable: .dependencyUnavailable
        default: .internalError
        }
    }
}
