import ArgumentParser
import ScoreboardCLI

#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The one executable. Commands live in ScoreboardCLI so that tests can run them.
struct Scoreboard: AsyncParsableCommand {
    static let configuration = ScoreboardCommand.configuration
}

@main
enum ScoreboardMain {
    static func main() async {
        // Line by line even into a pipe or a file: a long benchmark or load run under `tee` or `timeout` shows its
        // progress as it goes, and what it printed is not lost in a buffer when it is stopped.
        setvbuf(stdout, nil, _IOLBF, 0)
        await Scoreboard.main()
    }
}
