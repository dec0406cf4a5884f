import Foundation
import HTTPTypes
import Hummingbird
import ScoreboardHTTP

/// The live dashboard (`/dashboard`): three static files from this module's resources (Dashboard/), read once at
/// start. The page talks only to the push gateway that served it, and its Content-Security-Policy forbids any other
/// host, so it works on a machine without internet access.
struct DashboardRoutes: Sendable {
    struct File: Sendable {
        var body: ByteBuffer
        var contentType: String
    }

    let files: [String: File]

    /// The bundled files, read on first use.
    static let bundled = Result { try DashboardRoutes() }

    /// - Throws: when a file is missing from the bundle (a packaging error, found at start, not at the first visit).
    init() throws {
        var files: [String: File] = [:]
        for (name, type) in [("index.html", "text/html; charset=utf-8"), ("dashboard.js", "text/javascript; charset=utf-8"), ("dashboard.css", "text/css; charset=utf-8")] {
            let parts = name.split(separator: ".")
            guard let url = Bundle.module.url(forResource: String(parts[0]), withExtension: String(parts[1]), subdirectory: "Dashboard") else {
                throw DashboardMissing(file: name)
            }
            files[name] = File(body: ByteBuffer(data: try Data(contentsOf: url)), contentType: type)
        }
        self.files = files
    }

    static let securityHeaders: HTTPFields = [
        HTTPField.Name("Content-Security-Policy")!:
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        HTTPField.Name("X-Content-Type-Options")!: "nosniff",
        .cacheControl: "no-cache",
    ]

    func add<Context: RequestContext>(to router: Router<Context>) {
        router.get("/dashboard") { _, _ in try self.response(for: "index.html") }
        router.get("/dashboard/:file") { _, context in
            try self.response(for: context.parameters.get("file") ?? "")
        }
    }

    func response(for name: String) throws -> Response {
        guard let file = files[name] else { throw Problem(.notFound, detail: "the dashboard has no file \(name)") }
        var headers = Self.securityHeaders
        headers[.contentType] = file.contentType
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: file.body))
    }
}

struct DashboardMissing: Error, CustomStringConvertible {
    var file: String
    var description: String { "the dashboard file \(file) is missing from the ScoreboardPush resources" }
}
