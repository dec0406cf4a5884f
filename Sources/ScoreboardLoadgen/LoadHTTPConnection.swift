import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// An HTTP answer as the load generator needs it.
struct LoadHTTPAnswer: Sendable {
    var status: Int
    var body: ByteBuffer
}

/// One keep-alive HTTP/1.1 connection of the load generator: requests one after another (SwiftNIO directly, so the
/// generator depends on nothing of the servers it measures).
struct LoadHTTPConnection {
    typealias Channel = NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>

    let host: String
    private var iterator: NIOAsyncChannelInboundStream<HTTPClientResponsePart>.AsyncIterator
    private let outbound: NIOAsyncChannelOutboundWriter<HTTPClientRequestPart>

    /// Runs `body` with a connection to `host:port`, closed when `body` returns or throws. A request that fails
    /// leaves the connection unusable: throw out of `body` and open another.
    static func with<T: Sendable>(
        host: String, port: Int, connectTimeout: TimeAmount = .seconds(5), _ body: (inout LoadHTTPConnection) async throws -> T
    ) async throws -> T {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try Channel(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            var connection = LoadHTTPConnection(host: host, iterator: inbound.makeAsyncIterator(), outbound: outbound)
            return try await body(&connection)
        }
    }

    /// Sends one request and reads its whole answer. Throws `ChannelError.eof` when the server closed the connection.
    mutating func send(_ method: HTTPMethod, _ path: String, headers: [(String, String)], body: ByteBuffer?) async throws -> LoadHTTPAnswer {
        try await writeHead(method, path, headers: headers, body: body)
        var status = 0
        var collected = ByteBuffer()
        while let part = try await iterator.next() {
            switch part {
            case .head(let head): status = Int(head.status.code)
            case .body(var buffer): collected.writeBuffer(&buffer)
            case .end: return LoadHTTPAnswer(status: status, body: collected)
            }
        }
        throw ChannelError.eof
    }

    /// Sends a GET and hands each body chunk to `onChunk` until the answer ends or `onChunk` returns false: for
    /// server-sent event streams. Returns the status.
    mutating func stream(_ path: String, headers: [(String, String)], onChunk: (ByteBuffer) async throws -> Bool) async throws -> Int {
        try await writeHead(.GET, path, headers: headers, body: nil)
        var status = 0
        while let part = try await iterator.next() {
            switch part {
            case .head(let head):
                status = Int(head.status.code)
                guard status == 200 else { return status }
            case .body(let buffer): if try await !onChunk(buffer) { return status }
            case .end: return status
            }
        }
        return status
    }

    private func writeHead(_ method: HTTPMethod, _ path: String, headers: [(String, String)], body: ByteBuffer?) async throws {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
        head.headers.add(name: "Host", value: host)
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        head.headers.add(name: "Content-Length", value: String(body?.readableBytes ?? 0))
        try await outbound.write(.head(head))
        if let body { try await outbound.write(.body(.byteBuffer(body))) }
        try await outbound.write(.end(nil))
    }
}

/// Splits a server-sent event stream into the `data:` payloads of its events (comments and heartbeats skipped).
struct ServerSentEventParser {
    private var pending: [UInt8] = []

    /// The data of each event completed by `chunk`, with its `event:` type.
    mutating func feed(_ chunk: ByteBuffer) -> [(type: String?, data: [UInt8])] {
        pending.append(contentsOf: chunk.readableBytesView)
        var events: [(type: String?, data: [UInt8])] = []
        var start = 0
        var index = 0
        // An event ends at an empty line: "\n\n".
        while index + 1 < pending.count {
            if pending[index] == UInt8(ascii: "\n") && pending[index + 1] == UInt8(ascii: "\n") {
                if let event = Self.event(pending[start..<index]) { events.append(event) }
                start = index + 2
                index = start
            } else {
                index += 1
            }
        }
        if start > 0 { pending.removeFirst(start) }
        return events
    }

    private static func event(_ block: ArraySlice<UInt8>) -> (type: String?, data: [UInt8])? {
        var type: String?
        var data: [UInt8] = []
        var sawData = false
        for line in block.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true) {
            if line.starts(with: Array("data: ".utf8)) {
                if sawData { data.append(UInt8(ascii: "\n")) }
                data.append(contentsOf: line.dropFirst(6))
                sawData = true
            } else if line.starts(with: Array("event: ".utf8)) {
                type = String(decoding: line.dropFirst(7), as: UTF8.self)
            }
        }
        return sawData ? (type, data) : nil
    }
}
