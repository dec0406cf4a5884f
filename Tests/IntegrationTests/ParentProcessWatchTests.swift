import Foundation
import Testing

/// A role started by a harness with `SCOREBOARD_STOP_WITH_PARENT` stops itself when the harness is gone: a benchmark
/// killed by `timeout` used to leave its role processes running (ports, consumer group and CPU held).
@Suite(.timeLimit(.minutes(2)))
struct ParentProcessWatchTests {
    @Test func aRoleWhoseParentDiesShutsItselfDown() async throws {
        // The parent is a shell that starts the bare baseline server (a role run under the same service group),
        // prints its pid, and waits for a line on stdin; closing stdin ends the shell and orphans the server.
        let shell = Process()
        shell.executableURL = URL(fileURLWithPath: "/bin/sh")
        shell.arguments = [
            "-c", #"SCOREBOARD_STOP_WITH_PARENT=$$ "$0" bench baseline-server --port 0 & echo "child $!"; read line"#,
            Repository.executable.path,
        ]
        var environment = ProcessInfo.processInfo.environment
        environment.removeValue(forKey: "SCOREBOARD_STOP_WITH_PARENT")
        shell.environment = environment
        let output = Pipe(), input = Pipe()
        shell.standardOutput = output
        shell.standardInput = input
        shell.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try shell.run()

        let lines = AsyncStream<String>.makeStream()
        output.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            guard !data.isEmpty else {
                handle.readabilityHandler = nil
                lines.continuation.finish()
                return
            }
            for line in String(decoding: data, as: UTF8.self).split(separator: "\n") { lines.continuation.yield(String(line)) }
        }
        var child: Int32?
        var listening = false
        for await line in lines.stream {
            if line.hasPrefix("child "), let pid = Int32(line.dropFirst(6)) { child = pid }
            if line.contains(" listening on http://") { listening = true }
            if child != nil, listening { break }
        }
        let pid = try #require(child)
        #expect(listening)
        // Still running while its parent lives: the watch does not fire on its own.
        try await Task.sleep(for: .seconds(1))
        #expect(Self.isAlive(pid), "the server stopped while its parent was still running")

        try input.fileHandleForWriting.close()
        shell.waitUntilExit()
        let deadline = ContinuousClock.now + .seconds(30)
        while Self.isAlive(pid), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
        let survived = Self.isAlive(pid)
        if survived { kill(pid, SIGKILL) }
        #expect(!survived, "the orphaned server was still running 30 s after its parent exited")
    }

    /// Running or sleeping; a zombie (exited, not yet reaped by whoever adopted it) or a missing pid is not alive.
    static func isAlive(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return false }
        let state = stat[stat.index(close, offsetBy: 2)]
        return state != "Z" && state != "X"
    }
}
