import ArgumentParser
import Foundation
import ScoreboardPostgres

extension ScoreboardCommand {
    public struct Analytics: AsyncParsableCommand {
        public init() {}
        public static let configuration = CommandConfiguration(
            abstract: "Analytics over the stored events (analytics/README.md).", subcommands: [Export.self])

        public struct Export: AsyncParsableCommand {
            public init() {}
            public static let configuration = CommandConfiguration(
                abstract: "Export a period's events and daily aggregates as CSV files for a warehouse.",
                discussion: """
                    Writes events.csv (one row per applied event), daily.csv (events and points per UTC day, action, \
                    region and guild) and daily_active_users.csv into --out. The period is [--from, --to): UTC days \
                    (2026-11-01) or ISO 8601 instants (2026-11-01T12:00:00Z).
                    """)

            @OptionGroup var connection: ConnectionOptions
            @Option(help: "Start of the period, inclusive.") var from: String
            @Option(help: "End of the period, exclusive.") var to: String
            @Option(help: "The folder to write into (created if missing; files in it are replaced).") var out: String

            public func validate() throws {
                let (start, end) = (try Self.instant(from, option: "--from"), try Self.instant(to, option: "--to"))
                guard start < end else { throw ValidationError("--from must be before --to") }
            }

            public func run() async throws {
                let settings = try connection.settings()
                let logger = makeLogger("scoreboard.analytics")
                let store = PostgresStore(configuration: settings.postgres, logger: logger)
                let (start, end) = (try Self.instant(from, option: "--from"), try Self.instant(to, option: "--to"))
                let directory = URL(fileURLWithPath: out)
                let counts = try await store.withRunningClient { store in
                    try await AnalyticsExport(client: store.client, logger: logger).export(from: start, to: end, into: directory) { written in
                        FileHandle.standardError.write(Data("\rexport: \(written) events written".utf8))
                    }
                }
                FileHandle.standardError.write(Data("\n".utf8))
                for file in AnalyticsExport.File.allCases {
                    print("\(directory.appendingPathComponent(file.rawValue).path): \(counts[file] ?? 0) rows")
                }
            }

            /// A UTC day (`2026-11-01`, its midnight) or an ISO 8601 instant.
            static func instant(_ text: String, option: String) throws -> Date {
                let day = ISO8601DateFormatter()
                day.formatOptions = [.withFullDate]
                day.timeZone = TimeZone(identifier: "UTC")
                if let date = day.date(from: text), text.count == 10 { return date }
                let instant = ISO8601DateFormatter()
                if let date = instant.date(from: text) { return date }
                instant.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
                if let date = instant.date(from: text) { return date }
                throw ValidationError("\(option): \(text) is neither a day (2026-11-01) nor an ISO 8601 instant (2026-11-01T12:00:00Z)")
            }
        }
    }
}
