import Foundation
import Hummingbird
import ScoreboardCore
import ScoreboardHTTP

extension ScoreIngest {
    public struct IssuedActionToken: Codable, Sendable {
        public var action: String
        public var actionToken: String
        public var expiresAt: Int64
    }

    /// `POST /v1/actions/{action}/token`: a one-time action token, for a player who is not banned and has minted
    /// fewer than the per-minute limit.
    public func issueToken(action: String, request: Request, context: ScoreboardRequestContext) async throws -> Response {
        let identity = try await authenticate(request, context: context, roles: [.player])
        let clientIP = clientIP(request, context: context)
        if let problem = ScoreEvent.identifierProblem(action) {
            throw reject(Problem(.invalidParameter, detail: "action \(problem)"), userID: identity.userID, action: nil, clientIP: clientIP)
        }
        guard configuration.actions.actions[action] != nil else {
            throw reject(Problem(.unknownAction, detail: "no action \(action)"), userID: identity.userID, action: action, clientIP: clientIP)
        }
        let now = now()
        let limit = RateLimit.mints(userID: identity.userID, options: options)
        switch try await withDependency({ try await state.checkMint(userID: identity.userID, limit: limit, requestID: UUID().uuidString, now: now) }) {
        case .allowed: break
        case .banned:
            throw reject(Problem(.banned, detail: "user \(identity.userID) is banned"), userID: identity.userID, action: action, clientIP: clientIP)
        case .rateLimited(let wait):
            throw reject(
                Problem(.rateLimited, detail: "limit action-tokens", retryAfter: Int((wait + 999) / 1000)), userID: identity.userID, action: action,
                clientIP: clientIP)
        }
        let token = ActionToken.mint(userID: identity.userID, action: action, now: now, keys: configuration.actionTokenKeys)
        return try jsonResponse(
            IssuedActionToken(action: action, actionToken: token, expiresAt: now.millisecondsSinceEpoch + ActionToken.lifetimeMilliseconds),
            status: .created)
    }
}
