import Foundation
import JWTKit
import ScoreboardCore
import ScoreboardRedis
import Synchronization

/// The bearer-token revocation list: a `jti` is refused from the moment it is revoked until the token's own expiry
/// (after that, `exp` refuses it anyway). Redis in production (``RedisTokenRevocations``), memory in tests.
public protocol TokenRevocations: Sendable {
    /// Whether `tokenID` is revoked now.
    /// - Throws: When the store does not answer (a 503 for the request, never a pass).
    func isRevoked(tokenID: String) async throws -> Bool

    /// Refuses `tokenID` until `until`.
    func revoke(tokenID: String, until: Timestamp) async throws
}

// The Redis adapter is declared a ``TokenRevocations`` here rather than in the executable because every HTTP role
// authenticates and this module already reads Redis's errors (`Problem(dependencyError:)`): the push role and the
// tests get it without a copy of the conformance.
extension RedisTokenRevocations: TokenRevocations {}

extension JWTAuthenticator {
    /// Whether the token `tokenID` names is on the revocation list now: for connections that outlive the request
    /// that authenticated them (the push gateway's personal streams re-check once per heartbeat).
    /// - Throws: When the revocation store does not answer.
    public func isRevoked(tokenID: String) async throws -> Bool {
        guard let revocations else { return false }
        return try await revocations.isRevoked(tokenID: tokenID)
    }

    /// The Redis key of a revoked `jti` (``RedisTokenRevocations/key(tokenID:)``), kept for the tests that revoke
    /// through Redis directly.
    public static func revocationKey(tokenID: String) -> String { RedisTokenRevocations.key(tokenID: tokenID) }

    /// An authenticator whose revocation list is in `redis` (`nil`: no revocation check).
    public init(keys: JWTKeyCollection, algorithmsByKeyID: [String: String], configuration: Configuration, redis: RedisConnectionPool?) {
        self.init(
            keys: keys, algorithmsByKeyID: algorithmsByKeyID, configuration: configuration, revocations: redis.map(RedisTokenRevocations.init))
    }

    /// An authenticator for the keys of a JWKS file, whose revocation list is in `redis` (`nil`: no revocation check).
    public init(jwks: JWKSFile, configuration: Configuration, redis: RedisConnectionPool?) async throws {
        try await self.init(jwks: jwks, configuration: configuration, revocations: redis.map(RedisTokenRevocations.init))
    }
}

/// Revocations in memory, each forgotten at its expiry by `clock` (as Redis's `PXAT` does), and able to fail on cue
/// as a Redis that is down.
public final class MemoryTokenRevocations: TokenRevocations, Sendable {
    private let entries = Mutex<[String: Timestamp]>([:])
    private let failure = Mutex<(any Error)?>(nil)
    private let clock: @Sendable () -> Timestamp

    public init(clock: @escaping @Sendable () -> Timestamp = { Timestamp.now() }) {
        self.clock = clock
    }

    /// Every call throws `error` until this is called again with `nil`.
    public func fail(with error: (any Error)?) { failure.withLock { $0 = error } }

    /// The revoked ids that have not expired, with their expiry.
    public var revoked: [String: Timestamp] {
        let now = clock()
        return entries.withLock { $0.filter { $0.value > now } }
    }

    public func isRevoked(tokenID: String) async throws -> Bool {
        if let error = failure.withLock({ $0 }) { throw error }
        let now = clock()
        return entries.withLock { ($0[tokenID].map { $0 > now }) ?? false }
    }

    public func revoke(tokenID: String, until: Timestamp) async throws {
        if let error = failure.withLock({ $0 }) { throw error }
        entries.withLock { $0[tokenID] = until }
    }
}
