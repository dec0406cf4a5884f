import Foundation
import ScoreboardCLI
import ScoreboardCore
import ScoreboardDefinitions
import ScoreboardKafka
import Testing

@Suite(.serialized, .timeLimit(.minutes(2)))
struct TopicsApplyTests {
    func writeDefinition(name: String, partitions: Int, retentionMs: Int, to folder: URL) throws {
        let yaml = """
            name: \(name)
            description: a test topic
            partitions: \(partitions)
            replicationFactor: 1
            retentionMs: \(retentionMs)
            cleanupPolicy: delete
            key: { field: userId, description: the user }
            valueSchema: { type: object }
            """
        try yaml.write(to: folder.appendingPathComponent("topic.yaml"), atomically: true, encoding: .utf8)
    }

    @Test func applyTwiceCreatesOnceThenReportsDrift() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent(TestEnvironment.uniqueName("topics"))
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let name = TestEnvironment.uniqueName("apply")
        let admin = try TestEnvironment.admin()
        let applier = TopicsApplier(admin: admin)

        try writeDefinition(name: name, partitions: 3, retentionMs: 3_600_000, to: folder)
        let first = try await applier.apply(try TopicCatalog.load(directory: folder))
        #expect(first.map(\.result) == [.created])
        let second = try await applier.apply(try TopicCatalog.load(directory: folder))
        #expect(second.map(\.result) == [.upToDate])
        #expect(try await admin.describeTopics([name])[name]?.partitionCount == 3)

        // The declaration changes; the broker keeps what it has, and apply says how they differ.
        try writeDefinition(name: name, partitions: 5, retentionMs: 7_200_000, to: folder)
        let third = try await applier.apply(try TopicCatalog.load(directory: folder))
        #expect(third.map(\.result) == [.drift([
            "partitions: declared 5, broker has 3",
            "retention.ms: declared 7200000, broker has 3600000",
        ])])
        #expect(try await admin.describeTopics([name])[name]?.partitionCount == 3)
        try await admin.deleteTopics([name])
    }

    @Test func repositoryTopicsApplyCleanly() async throws {
        let catalog = try TopicCatalog.load(directory: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("topics"))
        let applier = TopicsApplier(admin: try TestEnvironment.admin())
        _ = try await applier.apply(catalog)
        let again = try await applier.apply(catalog)
        #expect(again.count == catalog.topics.count)
        #expect(again.allSatisfy { $0.result == .upToDate })
    }
}

@Suite(.timeLimit(.minutes(2)))
struct DoctorTests {
    @Test func allThreeServersAreHealthy() async throws {
        let checks = await Doctor(settings: TestEnvironment.settings, logger: TestEnvironment.logger).run()
        #expect(checks.map(\.server) == ["kafka", "redis", "postgres"])
        for check in checks { #expect(check.isHealthy, "\(check.server): \(check.detail)") }
        #expect(checks[0].detail.contains("librdkafka 2."))
        #expect(checks[1].detail.hasPrefix("redis 7"))
        #expect(checks[2].detail.hasPrefix("postgresql 1"))
    }

    @Test func aDownServerIsNamed() async throws {
        var settings = TestEnvironment.settings
        settings.redis.port = try freeLoopbackPort()
        settings.kafkaBrokers = ["127.0.0.1:\(try freeLoopbackPort())"]
        let checks = await Doctor(settings: settings, logger: TestEnvironment.logger, timeout: .seconds(4)).run()
        #expect(checks.filter { !$0.isHealthy }.map(\.server) == ["kafka", "redis"])
        #expect(checks.first { $0.server == "postgres" }?.isHealthy == true)
    }
}
