import Foundation
import Hummingbird
import ScoreboardCore
import ScoreboardHTTP

// What a query or stream request names, validated: board, period, integers and identifiers.
extension PushGateway {
    /// The board a query or stream names, validated: window and dimension declared, a well-formed period that has
    /// begun. (A region or guild without scores is a valid, empty board: ``BoardReader`` reads nothing for it.)
    func board(_ request: Request, _ context: PushRequestContext) throws -> BoardKey {
        let stream: BoardStream
        do {
            stream = try BoardStream(
                window: try context.parameters.require("window"), dimension: try context.parameters.require("dimension"),
                value: try context.parameters.get("value").map { _ in try Self.pathIdentifier(context, "value") })
        } catch let error as ScoreboardError {
            throw Problem(.invalidParameter, errors: error.reasons)
        }
        guard reader.catalog.declares(stream) else { throw Problem(.notFound, detail: "no \(stream.window.rawValue) × \(stream.dimension.rawValue) board is declared") }
        let period = try period(request, of: stream.window)
        return stream.board(period: period.key)
    }

    /// The `period` query parameter (default: the current one). A period that has not begun yet has no board.
    func period(_ request: Request, of window: LeaderboardWindow) throws -> WindowPeriod {
        let current = window.period(containing: now())
        guard let named = request.uri.queryParameters["period"].map(String.init) else { return current }
        let period: WindowPeriod
        do {
            period = try window.period(named: named)
        } catch {
            // Written like a period (what openapi.yaml's pattern allows) but not one of this window's, such as `all`
            // on a monthly board or 2026-02-30: no such board period, as a period that has not begun. Anything else
            // is malformed.
            if Self.isPeriodShaped(named) { throw Problem(.notFound, detail: "\(window.rawValue) boards have no period \(named)") }
            throw Problem(.invalidParameter, errors: error.reasons)
        }
        if let start = period.start, let currentStart = current.start, start > currentStart {
            throw Problem(.notFound, detail: "period \(named) has not begun")
        }
        if let end = period.end, end <= ScoreEvent.Limits.earliest {
            throw Problem(.notFound, detail: "period \(named) is before any score")
        }
        return period
    }

    /// `all`, `YYYY-MM`, `YYYY-MM-DD` or `YYYY-Www` with months 01-12, days 01-31 and weeks 01-53: the `period`
    /// pattern of openapi.yaml.
    static func isPeriodShaped(_ key: String) -> Bool {
        if key == "all" { return true }
        let parts = key.split(separator: "-", omittingEmptySubsequences: false)
        func number(_ text: Substring, digits: Int, in range: ClosedRange<Int>) -> Bool {
            text.count == digits && text.allSatisfy(\.isASCII) && Int(text).map(range.contains) == true
        }
        guard parts.count >= 2, number(parts[0], digits: 4, in: 0...9999) else { return false }
        if parts.count == 2, parts[1].hasPrefix("W") { return number(parts[1].dropFirst(), digits: 2, in: 1...53) }
        guard number(parts[1], digits: 2, in: 1...12) else { return false }
        return parts.count == 2 || (parts.count == 3 && number(parts[2], digits: 2, in: 1...31))
    }

    static func integer(_ request: Request, _ name: String, default value: Int, range: ClosedRange<Int>) throws -> Int {
        guard let text = request.uri.queryParameters[Substring(name)] else { return value }
        guard let number = Int(String(text)), range.contains(number) else {
            throw Problem(.invalidParameter, detail: "\(name) must be an integer from \(range.lowerBound) to \(range.upperBound)")
        }
        return number
    }

    /// A path parameter that is an identifier, percent-decoded first (`%3A` is `:`).
    static func pathIdentifier(_ context: PushRequestContext, _ name: String) throws -> String {
        let raw = try context.parameters.require(name)
        guard let decoded = raw.removingPercentEncoding else { throw Problem(.invalidParameter, detail: "\(name) is not valid percent-encoding") }
        return try identifier(decoded, name: name)
    }

    static func identifier(_ value: String, name: String) throws -> String {
        if let problem = ScoreEvent.identifierProblem(value) { throw Problem(.invalidParameter, detail: "\(name) \(problem)") }
        return value
    }
}
