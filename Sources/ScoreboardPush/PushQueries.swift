import Hummingbird
import ScoreboardCore
import ScoreboardHTTP

// The query API: top N, around a member, a member's standing on every board.
extension PushGateway {
    func top(_ request: Request, _ context: PushRequestContext) async throws -> Response {
        let limit = try Self.integer(request, "limit", default: 10, range: 1...configuration.maxPageSize)
        let offset = try Self.integer(request, "offset", default: 0, range: 0...configuration.maxOffset)
        let board = try board(request, context)
        return Self.jsonBody(try await Self.readingDependencies { try await reader.topJSON(board, limit: limit, offset: offset) })
    }

    func around(_ request: Request, _ context: PushRequestContext) async throws -> Response {
        let userID = try Self.pathIdentifier(context, "userId")
        let radius = try Self.integer(request, "radius", default: 5, range: 0...configuration.maxRadius)
        let board = try board(request, context)
        guard let page = try await Self.readingDependencies({ try await reader.aroundJSON(board, userID: userID, radius: radius) }) else {
            throw Problem(.notFound, detail: "\(userID) is not on \(board.id)")
        }
        return Self.jsonBody(page)
    }

    func standing(_ request: Request, _ context: PushRequestContext) async throws -> Response {
        let userID = try Self.pathIdentifier(context, "userId")
        return Self.jsonBody(try await Self.readingDependencies { try await reader.standingJSON(userID: userID, now: now()) })
    }

    /// A 200 answer with an already encoded JSON body (often one kept in memory: see ``BoardMemory``).
    static func jsonBody(_ body: ByteBuffer) -> Response {
        Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: body))
    }

    /// Runs a read of Redis or PostgreSQL: a failure of either is 503 with Retry-After (the client retries), never 500.
    static func readingDependencies<T>(_ read: () async throws -> T) async throws -> T {
        do { return try await read() } catch let problem as Problem { throw problem } catch {
            throw Problem(.dependencyUnavailable, detail: "the board store does not answer", retryAfter: 1)
        }
    }
}
