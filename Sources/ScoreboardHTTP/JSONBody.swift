import Foundation
import Hummingbird
import NIOCore
import ScoreboardCore

extension Request {
    /// The body as a JSON value, read up to `limit` bytes and parsed in linear time with nesting bounded by
    /// ``JSONValue/maximumDepth``: nothing expensive runs on a body before this refuses it.
    /// - Throws: ``Problem`` `body-too-large`, `unsupported-media-type` or `invalid-body` (with the parser's reason).
    public mutating func decodeJSONValue(limit: Int) async throws -> JSONValue {
        if let contentType = headers[.contentType], !contentType.lowercased().hasPrefix("application/json") {
            throw Problem(.unsupportedMediaType, detail: "got \(contentType.prefix(100))")
        }
        let buffer: ByteBuffer
        do {
            buffer = try await body.collect(upTo: limit)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw Problem(.bodyTooLarge, detail: "at most \(limit) bytes")
        }
        do {
            return try JSONValue.parse(buffer.readableBytesView)
        } catch {
            throw Problem(.invalidBody, errors: ["body: \(error)"])
        }
    }

    /// The body as JSON of type `T`, read up to `limit` bytes (parsed by ``decodeJSONValue(limit:)`` first).
    /// - Throws: ``Problem`` `body-too-large`, `unsupported-media-type` or `invalid-body` (with the decoder's reason).
    public mutating func decodeJSON<T: Decodable>(_ type: T.Type, limit: Int) async throws -> T {
        try JSONValue.decode(T.self, from: try await decodeJSONValue(limit: limit))
    }
}

extension JSONValue {
    /// Decodes `T` from a value already parsed (and bounded) by ``JSONValue/parse(_:maximumDepth:)``.
    /// - Throws: ``Problem`` `invalid-body`.
    public static func decode<T: Decodable>(_ type: T.Type, from value: JSONValue) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: JSONEncoder().encode(value))
        } catch let error as DecodingError {
            throw Problem(.invalidBody, errors: [DecodingFailure.describe(error)])
        } catch {
            throw Problem(.invalidBody, detail: "not JSON")
        }
    }
}

enum DecodingFailure {
    static func describe(_ error: DecodingError) -> String {
        func path(_ codingPath: [any CodingKey]) -> String {
            let joined = codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
            return joined.isEmpty ? "body" : joined
        }
        switch error {
        case .keyNotFound(let key, let context): return "\(path(context.codingPath + [key])): is required"
        case .typeMismatch(_, let context), .valueNotFound(_, let context): return "\(path(context.codingPath)): wrong type"
        case .dataCorrupted(let context): return "\(path(context.codingPath)): \(context.debugDescription)"
        @unknown default: return "body: \(error)"
        }
    }
}

/// A JSON response with a status, encoded with sorted keys.
public func jsonResponse<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return Response(
        status: status, headers: [.contentType: "application/json"],
        body: .init(byteBuffer: ByteBuffer(bytes: try encoder.encode(value))))
}
