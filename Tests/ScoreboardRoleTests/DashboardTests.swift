import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

/// The live dashboard's files as the push gateway serves them. (The page itself runs in a browser; what it shows is
/// tested against a running stack there.)
struct DashboardTests {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Sources/ScoreboardPush/Dashboard")

    @Test func thePageAndItsFilesAreServedWithAPolicyThatAllowsNoOtherHost() async throws {
        try await PushWorld().withClient { client in
            try await client.execute(uri: "/dashboard", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "text/html; charset=utf-8")
                let policy = try #require(response.headers[HTTPField.Name("Content-Security-Policy")!])
                #expect(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'") && policy.contains("script-src 'self'"))
                #expect(String(buffer: response.body).contains(#"src="/dashboard/dashboard.js""#))
            }
            for (file, type) in [("dashboard.js", "text/javascript; charset=utf-8"), ("dashboard.css", "text/css; charset=utf-8")] {
                try await client.execute(uri: "/dashboard/\(file)", method: .get) { response in
                    #expect(response.status == .ok)
                    #expect(response.headers[.contentType] == type)
                    let onDisk = try String(contentsOf: Self.folder.appendingPathComponent(file), encoding: .utf8)
                    #expect(String(buffer: response.body) == onDisk)
                }
            }
        }
    }

    /// Bad input tried: a file the dashboard does not have, a path that climbs out of its folder, an encoded one.
    @Test func otherPathsAreNotFoundProblems() async throws {
        try await PushWorld().withClient { client in
            for uri in ["/dashboard/secret.txt", "/dashboard/..%2FPackage.swift", "/dashboard/%2E%2E%2F%2E%2E%2FPackage.swift"] {
                try await client.execute(uri: uri, method: .get) { response in
                    #expect(response.status == .notFound, "\(uri)")
                    #expect(response.headers[.contentType] == "application/problem+json", "\(uri)")
                }
            }
        }
    }

    /// No request to any outside host at run time: no absolute URL in the files (the SVG namespace is a name, not
    /// a request).
    @Test func theFilesReferenceNoOtherHost() throws {
        for file in ["index.html", "dashboard.js", "dashboard.css"] {
            let text = try String(contentsOf: Self.folder.appendingPathComponent(file), encoding: .utf8)
                .replacingOccurrences(of: "http://www.w3.org/2000/svg", with: "")
            #expect(!text.contains("http://") && !text.contains("https://") && !text.contains("//cdn") && !text.contains("@import"), "\(file)")
        }
    }
}
