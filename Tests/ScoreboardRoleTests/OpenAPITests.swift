import Foundation
import Hummingbird
import Logging
import ScoreboardCore
import ScoreboardDefinitions
import ScoreboardGateway
import ScoreboardHTTP
import ScoreboardKafka
import ScoreboardPostgres
import ScoreboardPush
import ScoreboardRedis
import Testing
import Yams

/// openapi.yaml and the routers agree: every route is documented, every documented operation is served.
struct OpenAPITests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func specification() throws -> [String: Any] {
        try Yams.load(yaml: String(contentsOf: Self.root.appendingPathComponent("openapi.yaml"), encoding: .utf8)) as! [String: Any]
    }

    /// `METHOD /path/{param}` for every operation in the spec.
    func documented() throws -> Set<String> {
        let paths = try specification()["paths"] as! [String: Any]
        var operations: Set<String> = []
        for (path, item) in paths {
            for method in (item as! [String: Any]).keys where ["get", "post", "put", "delete", "patch"].contains(method) {
                operations.insert("\(method.uppercased()) \(path)")
            }
        }
        return operations
    }

    /// The routes the two HTTP routers serve, with Hummingbird's `:param` written as `{param}`.
    func served() async throws -> Set<String> {
        let logger = Logger(label: "test")
        let catalog = try PipelineCatalog.load(directory: Self.root.appendingPathComponent("pipelines"))
        let requests = try RequestSchemas.load(directory: Self.root.appendingPathComponent("topics/requests"))
        let authenticator = JWTAuthenticator(keys: .init(), algorithmsByKeyID: [:], configuration: .init(), redis: nil)
        let operations = OperationsRoutes(registry: .init()) { [:] }
        let gateway = try await buildGatewayRouter(
            configuration: GatewayConfiguration(
                server: .init(port: 0), actions: catalog.actions,
                actionTokenKeys: try ActionTokenKeys.parse(Data(ActionTokenKeys.makeLocal().utf8), origin: "test"),
                schemas: .init(
                    scoreRequest: requests[RequestSchemas.scoreRequest], batchRequest: requests[RequestSchemas.batchRequest],
                    revocationRequest: requests[RequestSchemas.revocationRequest]),
                jwks: try JWKSFile.parse(Data(JWKSFile.makeLocal().utf8), origin: "test")),
            ports: .memory(), logger: logger)
        let gatewayRoutes = gateway.router.routes.map(\.description)
        let push = PushGateway(
            configuration: .init(), feed: UpdateFeed(source: MemoryUpdateSource(), logger: logger),
            reader: BoardReader(live: MemoryLiveBoards(), archive: MemoryStandingsArchive(), catalog: catalog.leaderboards),
            authenticator: authenticator, logger: logger)
        let pushRoutes = push.router(operations: operations).routes.map(\.description)
        return Set((gatewayRoutes + pushRoutes).map { route in
            route.split(separator: "/", omittingEmptySubsequences: false)
                .map { $0.hasPrefix(":") ? "{\($0.dropFirst())}" : String($0) }.joined(separator: "/")
        })
    }

    @Test func everyRouteIsDocumentedAndEveryDocumentedRouteIsServed() async throws {
        let documented = try documented()
        let served = try await served()
        #expect(served.subtracting(documented).sorted() == [], "served but not in openapi.yaml")
        #expect(documented.subtracting(served).sorted() == [], "in openapi.yaml but not served")
    }

    @Test func theSpecListsEveryProblemType() throws {
        let schemas = (try specification()["components"] as! [String: Any])["schemas"] as! [String: Any]
        let problem = (schemas["Problem"] as! [String: Any])["properties"] as! [String: Any]
        let types = Set((problem["type"] as! [String: Any])["enum"] as! [String])
        #expect(types == Set(Problem.Kind.allCases.map(\.uri)))
    }
}
