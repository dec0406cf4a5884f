import Foundation
import ScoreboardCore

extension AnalyticsCatalog {
    /// Reads and checks `metrics.yaml` in `directory` (`analytics/`).
    /// - Throws: ``ScoreboardError`` naming the file and every problem found.
    public static func load(directory: URL) throws -> AnalyticsCatalog {
        let catalog: AnalyticsCatalog = try PipelineCatalog.decode(directory.appendingPathComponent("metrics.yaml"))
        try catalog.validate()
        return catalog
    }
}
