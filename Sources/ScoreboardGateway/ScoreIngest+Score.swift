import Hummingbird
import ScoreboardCore
import ScoreboardHTTP

extension ScoreIngest {
    struct ScoreRequest: Decodable {
        var action: String
        var actionToken: String
        var idempotencyKey: String
    }

    /// `POST /v1/scores`: one player's score, with its action token and idempotency key.
    public func score(request: Request, context: ScoreboardRequestContext) async throws -> Response {
        var request = request
        let identity = try await authenticate(request, context: context, roles: [.player])
        let clientIP = clientIP(request, context: context)
        let body: ScoreRequest
        do {
            body = try await decodeValidated(
                ScoreRequest.self, from: &request, schema: configuration.schemas.scoreRequest, limit: options.maxBodyBytes)
        } catch let problem as Problem {
            throw reject(problem, userID: identity.userID, action: nil, clientIP: clientIP)
        }
        guard let definition = configuration.actions.actions[body.action] else {
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
}
