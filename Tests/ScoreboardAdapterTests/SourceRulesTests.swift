import Foundation
import Testing

/// Rules about our own sources that the compiler does not enforce.
@Suite struct SourceRulesTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Swift 6.3.1 at -O corrupts task-group results that are tuples returned from a do/catch child (indices and
    /// payloads come back as garbage: scripts/repro/taskgroup-tuple-results.swift). Debug builds, which the tests
    /// run, are correct, so no test of the code itself can catch it: a child task's result is never a tuple.
    @Test func noTaskGroupHasATupleResult() throws {
        var offenders: [String] = []
        let sources = Self.root.appendingPathComponent("Sources")
        let files = FileManager.default.enumerator(at: sources, includingPropertiesForKeys: nil)!
        for case let file as URL in files where file.pathExtension == "swift" {
            let text = try String(contentsOf: file, encoding: .utf8)
            for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
            where line.range(of: #"TaskGroup\(of:\s*\("#, options: .regularExpression) != nil {
                offenders.append("\(file.path.replacingOccurrences(of: Self.root.path + "/", with: "")):\(number + 1)")
            }
        }
        #expect(offenders.isEmpty, "task groups with tuple results: \(offenders)")
    }
}
