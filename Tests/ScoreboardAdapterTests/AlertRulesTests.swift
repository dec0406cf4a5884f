import Foundation
import Testing

/// analytics/alerts.yaml is valid Prometheus and every rule fires on the series that should trip it and only on
/// those (analytics/alerts.test.yaml), checked by promtool. `scripts/test.sh` installs promtool
/// (`scripts/ops/promtool.sh install`); without it this test fails, it does not skip.
struct AlertRulesTests {
    @Test func promtoolChecksTheRulesAndPassesTheirUnitTests() throws {
        let promtool = DeploymentFilesTests.root.appendingPathComponent(".local/tools/promtool")
        try #require(
            FileManager.default.isExecutableFile(atPath: promtool.path),
            "promtool is missing: run scripts/ops/promtool.sh install (scripts/test.sh does)")
        let check = try Self.run(promtool, ["check", "rules", "alerts.yaml"])
        #expect(check.status == 0, "promtool check rules:\n\(check.output)")
        let tests = try Self.run(promtool, ["test", "rules", "alerts.test.yaml"])
        #expect(tests.status == 0, "promtool test rules:\n\(tests.output)")
        #expect(tests.output.contains("SUCCESS"))
    }

    static func run(_ executable: URL, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.currentDirectoryURL = DeploymentFilesTests.root.appendingPathComponent("analytics")
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }
}
