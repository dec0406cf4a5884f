import HTTPTypes
import Hummingbird
import Synchronization

/// Answers 405 `method-not-allowed` (with `Allow`) for a known path asked with a method it does not serve, where the
/// router alone would answer 404 as if the path did not exist.
///
/// Add it to the router before its routes, then call ``learn(_:)`` once they are all registered: middleware runs for
/// requests no route matched, so it sees exactly those.
public final class MethodNotAllowedMiddleware<Context: RequestContext>: RouterMiddleware, Sendable {
    private let routes = Mutex<[(method: HTTPRequest.Method, segments: [Substring])]>([])

    public init() {}

    /// Records the router's routes (call after the last route is added).
    public func learn(_ router: Router<Context>) {
        let table = router.routes.map { ($0.method, $0.path.description.split(separator: "/")) }
        routes.withLock { $0 = table }
    }

    /// A route segment that matches any value: Hummingbird describes `:id` as `{id}`.
    static func isCapture(_ segment: Substring) -> Bool {
        (segment.hasPrefix("{") && segment.hasSuffix("}")) || segment.hasPrefix(":")
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            let path = request.uri.path.split(separator: "/")
            let allowed = routes.withLock { routes in
                routes.filter { route in
                    route.segments.count == path.count
                        && zip(route.segments, path).allSatisfy { pattern, segment in Self.isCapture(pattern) || pattern == segment }
                }.map(\.method.rawValue)
            }
            guard !allowed.isEmpty else { throw error }
            var problem = Problem(.methodNotAllowed, detail: "\(request.method.rawValue) is not served here; allowed: \(Set(allowed).sorted().joined(separator: ", "))")
            problem.allow = Set(allowed).sorted()
            throw problem
        }
    }
}
