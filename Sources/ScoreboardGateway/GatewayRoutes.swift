import Hummingbird
import ScoreboardHTTP

/// The gateway's routes.
enum GatewayRoutes {
    static func router(ingest: ScoreIngest, operations: OperationsRoutes) -> Router<ScoreboardRequestContext> {
        let router = Router(context: ScoreboardRequestContext.self)
        let methods = MethodNotAllowedMiddleware<ScoreboardRequestContext>()
        router.add(middleware: MetricsMiddleware())
        router.add(middleware: ProblemMiddleware())
        router.add(middleware: methods)
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
            try await ingest.setBan(userID: try context.parameters.require("userId"), banned: true, request: request, context: context)
        }
        router.delete("/v1/admin/bans/:userId") { request, context in
            try await ingest.setBan(userID: try context.parameters.require("userId"), banned: false, request: request, context: context)
        }
        router.post("/v1/admin/revocations") { request, context in
            try await ingest.revoke(request: request, context: context)
        }
        methods.learn(router)
        return router
    }
}
