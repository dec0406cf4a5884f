import NIOCore

/// One-off requests for benchmarks and scripts: a status check, a page of text.
public enum LoadProbe {
    /// The status of `GET path` on `host:port`.
    public static func status(host: String = "127.0.0.1", port: Int, path: String) async throws -> Int {
        try await get(host: host, port: port, path: path).status
    }

    /// `GET path` on `host:port`: the status and the body as text.
    public static func get(host: String = "127.0.0.1", port: Int, path: String) async throws -> (status: Int, body: String) {
        try await LoadHTTPConnection.with(host: host, port: port, connectTimeout: .seconds(2)) { connection in
            let answer = try await connection.send(.GET, path, headers: [], body: nil)
            return (answer.status, String(buffer: answer.body))
        }
    }
}
