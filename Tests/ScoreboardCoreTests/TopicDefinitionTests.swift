import Foundation
import ScoreboardCore
import ScoreboardDefinitions
import Testing

@Suite struct TopicDefinitionTests {
    @Test func repositoryTopicsLoadAndCoverTheProduct() throws {
        let catalog = try TopicCatalog.load(directory: repositoryRoot.appendingPathComponent("topics"))
        let names = Set(catalog.topics.map(\.name))
        #expect(names == [
            "scoreboard.score-events.v1", "scoreboard.leaderboard-updates.v1", "scoreboard.fraud-flags.v1",
            "scoreboard.rejections.v1", "scoreboard.dead-letter.v1", "scoreboard.notifications.v1",
        ])
        // One user's events stay in order: score events are keyed by user id.
        #expect(catalog.topic(named: "scoreboard.score-events.v1")?.key.field == "userId")
        for topic in catalog.topics {
            #expect(topic.partitions >= 1)
            #expect(topic.configs["retention.ms"] == String(topic.retentionMilliseconds))
        }
    }

    func definition(partitions: Int32 = 3, retention: Int64 = 60_000) -> TopicDefinition {
        TopicDefinition(
            name: "t", partitions: partitions, replicationFactor: 1, retentionMilliseconds: retention, cleanupPolicy: "delete",
            key: .init(field: "userId", description: ""), valueSchema: .object(["type": .string("object")]), description: "")
    }

    @Test func reconciliationCreatesMissingTopics() {
        #expect(TopicReconciliation.compare(definition(), with: nil) == .create)
    }

    @Test func reconciliationReportsPartitionAndConfigDrift() {
        let observed = ObservedTopic(partitions: 2, configs: ["retention.ms": "1000", "cleanup.policy": "delete"])
        #expect(TopicReconciliation.compare(definition(), with: observed) == .drift([
            "partitions: declared 3, broker has 2",
            "retention.ms: declared 60000, broker has 1000",
        ]))
        let same = ObservedTopic(partitions: 3, configs: ["retention.ms": "60000", "cleanup.policy": "delete"])
        #expect(TopicReconciliation.compare(definition(), with: same) == .upToDate)
        #expect(TopicReconciliation.compare(definition(), with: ObservedTopic(partitions: 3, configs: nil)) == .upToDate)
    }

    @Test func invalidDefinitionsAreRefusedWithTheirReasons() throws {
        var bad = definition(partitions: 0, retention: 0)
        bad.name = "bad name!"
        bad.cleanupPolicy = "keep"
        let error = try #require(throws: ScoreboardError.self) { try bad.validate() }
        #expect(error.reasons.count == 4)
    }

    @Test func malformedYAMLNamesTheFile() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("topics-\(UUID())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        try "name: x\npartitions: [not a number\n".write(to: folder.appendingPathComponent("broken.yaml"), atomically: true, encoding: .utf8)
        let error = try #require(throws: ScoreboardError.self) { try TopicCatalog.load(directory: folder) }
        #expect(error.reasons.first?.hasPrefix("broken.yaml:") == true)
    }
}
