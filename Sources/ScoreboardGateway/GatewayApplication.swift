import Foundation
import Hummingbird
import Logging
import ScoreboardCore
import ScoreboardHTTP
import ScoreboardRedis

/// The gateway's routes.
public enum GatewayRoutes {
    public static func router(ingest: ScoreIngest, redis: RedisConnectionPool, operations: OperationsRoutes) -> Router<ScoreboardRequestContext> {
        let router = Router(context: ScoreboardRequestContext.self)
        router.add(middleware: MetricsMiddleware())
        router.add(middleware: ProblemMiddleware())
        operations.add(to: router)

        router.post("/v1/actions/:action/token") { request, context in
            try await ingest.issueToken(action: try context.parameters.require("action"), request: request, context: context)
        }
        router.post("/v1/scores") { request, context in
            try await ingest.score(request: request, context: context)
        }
        router.post("/v1/events:batch") { request, context in
            try await ingest.batch(request: request, context: context)
        }

        // Operators: bans and bearer-token revocations.
        router.put("/v1/admin/bans/:userId") { request, context in
            _ = try await ingest.authenticator.authenticate(request, roles: [.admin])
            let userID = try validIdentifier(try context.parameters.require("userId"), name: "userId")
            try await redis.send(["SET", IngestGuard.banKey(userID: userID), "1"])
            return Response(status: .noContent)
        }
        router.delete("/v1/admin/bans/:userId") { request, context in
            _ = try await ingest.authenticator.authenticate(request, roles: [.admin])
            let userID = try validIdentifier(try context.parameters.require("userId"), name: "userId")
            try await redis.send(["DEL", IngestGuard.banKey(userID: userID)])
            return Response(status: .noContent)
        }
        router.post("/v1/admin/revocations") { request, context in
            _ = try await ingest.authenticator.authenticate(request, roles: [.admin])
            struct Revocation: Decodable { var jti: String; var expiresAt: Int64 }
            var request = request
            let revocation = try await request.decodeJSON(Revocation.self, limit: 1024)
            guard !revocation.jti.isEmpty, revocation.jti.utf8.count <= 128 else { throw Problem(.invalidBody, errors: ["jti: 1 to 128 characters"]) }
            // The entry lives as long as the token could: after its expiry the token fails on `exp` anyway.
            let ttl = max(1, revocation.expiresAt - Int64(Date().timeIntervalSince1970))
            try await redis.send(["SET", JWTAuthenticator.revocationKey(tokenID: revocation.jti), "1", "EX", String(ttl)])
            return Response(status: .noContent)
        }
        return router
    }

    static func validIdentifier(_ value: String, name: String) throws -> String {
        if let problem = ScoreEvent.identifierProblem(value) { throw Problem(.invalidParameter, detail: "\(name) \(problem)") }
        return value
    }
}
