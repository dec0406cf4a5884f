import Foundation
import ScoreboardCore
import Yams

/// The JSON Schemas of the gateway's request bodies (`topics/requests/*.yaml`), by file name without extension.
public struct RequestSchemas: Sendable {
    public var schemas: [String: JSONSchema]

    public static let scoreRequest = "score-request.v1"
    public static let batchRequest = "batch-request.v1"
    public static let revocationRequest = "revocation-request.v1"

    public static func load(directory: URL) throws -> RequestSchemas {
        var schemas: [String: JSONSchema] = [:]
        for name in [scoreRequest, batchRequest, revocationRequest] {
            let file = directory.appendingPathComponent(name + ".yaml")
            do {
                let document = try YAMLDecoder().decode(JSONValue.self, from: try String(contentsOf: file, encoding: .utf8))
                schemas[name] = try JSONSchema(document)
            } catch {
                throw ScoreboardError(code: .invalidDefinition, reasons: ["\(file.path): \(error)"])
            }
        }
        return RequestSchemas(schemas: schemas)
    }

    public subscript(name: String) -> JSONSchema { schemas[name]! }
}
