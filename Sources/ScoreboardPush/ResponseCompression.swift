import CompressNIO
import Foundation
import Hummingbird
import NIOCore

/// Gzips large JSON answers (board pages, analytics series) for clients that send `Accept-Encoding: gzip`.
///
/// Only whole bodies of a known length (the query answers) are compressed; streams (SSE, WebSocket) and small answers
/// pass as they are, since below about a kilobyte gzip's header and the CPU cost outweigh what it saves. zlib comes
/// from compress-nio, already resolved for WebSocket compression (hummingbird-compression is not resolvable here).
/// `scoreboard bench queries` measures the bytes saved and the time one compression takes.
struct GzipResponseMiddleware<Context: RequestContext>: RouterMiddleware {
    /// Bodies smaller than this are sent as they are.
    var minimumSize = 1_024

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response = try await next(request, context)
        guard Self.acceptsGzip(request.headers[values: .acceptEncoding]), response.headers[.contentEncoding] == nil,
            response.headers[.contentType]?.hasPrefix("application/json") == true,
            let length = response.body.contentLength, length >= minimumSize
        else { return response }
        let collector = BodyCollector(capacity: length)
        try await response.body.write(collector)
        let compressed = try ResponseGzip.compress(collector.collected)
        response.headers[.contentEncoding] = "gzip"
        response.headers[values: .vary].append("Accept-Encoding")
        response.headers[.contentLength] = nil
        response.body = ResponseBody(byteBuffer: compressed)
        return response
    }

    /// Whether an Accept-Encoding list admits gzip (`gzip`, `x-gzip` or `*`, without `q=0`).
    static func acceptsGzip(_ values: [String]) -> Bool {
        for item in values.flatMap({ $0.split(separator: ",") }) {
            let parts = item.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
            guard let coding = parts.first, ["gzip", "x-gzip", "*"].contains(coding) else { continue }
            let refused = parts.dropFirst().contains { $0.replacingOccurrences(of: " ", with: "").range(of: #"^q=0(\.0*)?$"#, options: .regularExpression) != nil }
            if !refused { return true }
        }
        return false
    }
}

/// gzip of one whole body.
public enum ResponseGzip {
    /// - Throws: compress-nio's error if zlib fails (it does not for valid input and a large enough buffer).
    public static func compress(_ body: ByteBuffer) throws -> ByteBuffer {
        var input = body
        let compressor = CompressionAlgorithm.gzip().compressor
        try compressor.startStream()
        var output = ByteBufferAllocator().buffer(capacity: compressor.maxSize(from: input))
        try compressor.streamDeflate(from: &input, to: &output, flush: .finish)
        try compressor.finishStream()
        return output
    }
}

/// Collects a response body written in parts.
private final class BodyCollector: ResponseBodyWriter {
    // Written by one task only: the middleware awaits the whole write before reading `collected`.
    var collected: ByteBuffer

    init(capacity: Int) { collected = ByteBufferAllocator().buffer(capacity: capacity) }

    func write(_ buffer: ByteBuffer) async throws {
        var buffer = buffer
        collected.writeBuffer(&buffer)
    }

    func finish(_ trailingHeaders: HTTPFields?) async throws {}
}
