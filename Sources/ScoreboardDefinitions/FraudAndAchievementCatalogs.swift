import Foundation
import ScoreboardCore
import Yams

extension PipelineCatalog {
    /// Reads and checks `fraud.yaml` in `directory` (`pipelines/`).
    /// - Throws: ``ScoreboardError`` naming the file and every problem found.
    public static func loadFraudRules(directory: URL) throws -> FraudRuleSet {
        let catalog: FraudCatalog = try decode(directory.appendingPathComponent("fraud.yaml"))
        return try catalog.ruleSet()
    }

    /// Reads and checks `achievements.yaml` in `directory` (`pipelines/`).
    /// - Throws: ``ScoreboardError`` naming the file and every problem found.
    public static func loadAchievements(directory: URL) throws -> AchievementCatalog {
        let catalog: AchievementCatalog = try decode(directory.appendingPathComponent("achievements.yaml"))
        try catalog.validate()
        return catalog
    }
}
