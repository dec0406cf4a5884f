import Hummingbird
import ScoreboardCore
import ScoreboardHTTP

extension ScoreIngest {
    struct Revocation: Decodable {
        var jti: String
        var expiresAt: Int64
    }

    /// `PUT` / `DELETE /v1/admin/bans/{userId}`.
    public func setBan(userID: String, banned: Bool, request: Request, context: ScoreboardRequestContext) async throws -> Response {
        _ = try await authenticator.authenticate(request, roles: [.admin])
        if let problem = ScoreEvent.identifierProblem(userID) { throw Problem(.invalidParameter, detail: "userId \(problem)") }
        if banned {
            try await withDependency { try await state.setBan(userID: userID, banned: true) }
        } else {
            let lifted = try await withDependency { try await state.liftBan(userID: userID) }
            guard lifted else {
                throw Problem(.banConfirmedByReview, detail: "\(userID)'s ban was confirmed by fraud review: lifting it is not supported yet")
            }
        }
        return Response(status: .noContent)
    }

    /// `POST /v1/admin/revocations`: the `jti` is refused until the token's own expiry, given in seconds since the
    /// epoch (at most the maximum token lifetime away: a token cannot live longer, so neither need its entry).
    public func revoke(request: Request, context: ScoreboardRequestContext) async throws -> Response {
        var request = request
        _ = try await authenticator.authenticate(request, roles: [.admin])
        let revocation = try await decodeValidated(
            Revocation.self, from: &request, schema: configuration.schemas.revocationRequest, limit: options.maxAdminBodyBytes)
        let nowSeconds = now().millisecondsSinceEpoch / 1000
        // Both are bounded (the schema caps expiresAt at 2100, which also refuses milliseconds), so this arithmetic
        // cannot overflow. No token lives longer than the maximum lifetime, so neither need its entry: a later
        // expiry is kept for that long.
        let longest = authenticator.configuration.maximumLifetime.components.seconds + authenticator.configuration.leeway.components.seconds
        let secondsLeft = min(revocation.expiresAt - nowSeconds, longest)
        // A token past its expiry fails on `exp` already: nothing to store.
        if secondsLeft > 0 {
            let until = Timestamp(millisecondsSinceEpoch: (nowSeconds + secondsLeft) * 1000)
            try await withDependency { try await revocations.revoke(tokenID: revocation.jti, until: until) }
        }
        return Response(status: .noContent)
    }
}
