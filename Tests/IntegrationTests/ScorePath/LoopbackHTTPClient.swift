import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// A small HTTP/1.1 client for tests: one keep-alive connection, requests one after another, and SSE streams.
/// (Swift NIO directly: nothing here should depend on the server code under test.)
struct HTTPAnswer: Sendable {
    var status: Int
    var headers: [String: String]
    var body: Data

    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] ?? [:] }
    var problemType: String? { (json["type"] as? String).map { String($0.split(separator: "/").last ?? "") } }
}

struct HTTPConnection {
    typealias Channel = NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>

    /// Runs `body` with a connection to `port` on loopback, closing it afterwards.
    static func with<T: Sendable>(port: Int, _ body: (inout HTTPConnection) async throws -> T) async throws -> T {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try Channel(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            var connection = HTTPConnection(iterator: inbound.makeAsyncIterator(), outbound: outbound)
            return try await body(&connection)
        }
    }

    var iterator: NIOAsyncChannelInboundStream<HTTPClientResponsePart>.AsyncIterator
    let outbound: NIOAsyncChannelOutboundWriter<HTTPClientRequestPart>

    mutating func send(_ method: HTTPMethod, _ path: String, headers: [String: String] = [:], body: Data? = nil) async throws -> HTTPAnswer {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
        head.headers.add(name: "Host", value: "127.0.0.1")
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        if let body { head.headers.add(name: "Content-Length", value: String(body.count)) }
        try await outbound.write(.head(head))
        if let body { try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: body)))) }
        try await outbound.write(.end(nil))
        var status = 0
        var responseHeaders: [String: String] = [:]
        var data = Data()
        while let part = try await iterator.next() {
            switch part {
            case .head(let head):
                status = Int(head.status.code)
                for header in head.headers { responseHeaders[header.name.lowercased()] = header.value }
            case .body(let buffer): data.append(contentsOf: buffer.readableBytesView)
            case .end: return HTTPAnswer(status: status, headers: responseHeaders, body: data)
            }
        }
        throw POSIXError(.ECONNRESET)
    }

    mutating func postJSON(_ path: String, token: String?, json: Any, contentType: String = "application/json") async throws -> HTTPAnswer {
        var headers = ["Content-Type": contentType]
        if let token { headers["Authorization"] = "Bearer \(token)" }
        return try await send(.POST, path, headers: headers, body: try JSONSerialization.data(withJSONObject: json))
    }
}

/// One server-sent event.
struct ServerSentEvent: Sendable {
    var id: String?
    var event: String?
    var data: String
    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(data.utf8))) as? [String: Any] ?? [:] }
}

/// Reads an SSE stream, handing each event to `onEvent` until it returns false (then the connection is closed).
func readServerSentEvents(
    port: Int, path: String, headers: [String: String] = [:], comments: Bool = false, onEvent: @Sendable (ServerSentEvent) async throws -> Bool
) async throws {
    try await HTTPConnection.with(port: port) { connection in
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path)
        head.headers.add(name: "Host", value: "127.0.0.1")
        head.headers.add(name: "Accept", value: "text/event-stream")
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        try await connection.outbound.write(.head(head))
        try await connection.outbound.write(.end(nil))
        var pending = ""
        while let part = try await connection.iterator.next() {
            guard case .body(let buffer) = part else {
                if case .end = part { return }
                continue
            }
            pending += String(buffer: buffer)
            while let range = pending.range(of: "\n\n") {
                let block = String(pending[pending.startIndex..<range.lowerBound])
                pending.removeSubrange(pending.startIndex..<range.upperBound)
                var event = ServerSentEvent(data: "")
                var isComment = true
                for line in block.split(separator: "\n", omittingEmptySubsequences: false) {
                    if line.hasPrefix("id: ") { event.id = String(line.dropFirst(4)); isComment = false }
                    if line.hasPrefix("event: ") { event.event = String(line.dropFirst(7)); isComment = false }
                    if line.hasPrefix("data: ") { event.data += String(line.dropFirst(6)); isComment = false }
                }
                if isComment {
                    // Comments (`: heartbeat`) reach the caller as empty events only when asked for.
                    if comments, try await !onEvent(ServerSentEvent(data: "")) { return }
                    continue
                }
                if try await !onEvent(event) { return }
            }
        }
    }
}
