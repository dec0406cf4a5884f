import Foundation
import ScoreboardCore
import Yams

/// The pipelines declared in `pipelines/`: the boards and the action catalog.
public struct PipelineCatalog: Sendable {
    public var leaderboards: LeaderboardCatalog
    public var actions: ActionCatalog

    /// Reads and validates `leaderboards.yaml` and `actions.yaml` in `directory`.
    /// - Throws: ``ScoreboardError`` naming the file and every problem found.
    public static func load(directory: URL) throws -> PipelineCatalog {
        let leaderboards: LeaderboardCatalog = try decode(directory.appendingPathComponent("leaderboards.yaml"))
        try leaderboards.validate()
        let actions: ActionCatalog = try decode(directory.appendingPathComponent("actions.yaml"))
        try actions.validate()
        return PipelineCatalog(leaderboards: leaderboards, actions: actions)
    }

    static func decode<T: Decodable>(_ file: URL) throws -> T {
        do {
            return try YAMLDecoder().decode(T.self, from: try String(contentsOf: file, encoding: .utf8))
        } catch {
            throw ScoreboardError(code: .invalidDefinition, reasons: ["\(file.lastPathComponent): \(error)"])
        }
    }
}
