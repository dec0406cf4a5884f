import ArgumentParser
import ScoreboardCLI

/// The one executable. Commands live in ScoreboardCLI so that tests can run them.
@main
struct Scoreboard: AsyncParsableCommand {
    static let configuration = ScoreboardCommand.configuration
}
