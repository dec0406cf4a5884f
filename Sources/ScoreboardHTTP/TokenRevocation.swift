import Foundation

extension JWTAuthenticator {
    /// Whether the token `tokenID` names is on the revocation list now: for connections that outlive the request
    /// that authenticated them (the push gateway's personal streams re-check once per heartbeat).
    /// - Throws: A `RedisError` when Redis does not answer.
    public func isRevoked(tokenID: String) async throws -> Bool {
        guard let redis else { return false }
        return try await redis.send(["EXISTS", Self.revocationKey(tokenID: tokenID)]).integer == 1
    }
}
