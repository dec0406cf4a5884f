/// A leaderboard's time window: UTC calendar periods over the event's server-stamped time.
public enum LeaderboardWindow: String, CaseIterable, Hashable, Sendable, Codable {
    case allTime = "all-time"
    case daily
    /// ISO 8601 weeks: Monday to Sunday, numbered within the ISO week-year (which may differ from the calendar year
    /// in the first and last days of January and December).
    case weekly
    case monthly

    /// The period of this window that contains `time`.
    public func period(containing time: Timestamp) -> WindowPeriod {
        let day = CivilDate.dayNumber(containing: time)
        switch self {
        case .allTime:
            return WindowPeriod(window: self, key: "all", start: nil, end: nil)
        case .daily:
            let date = CivilDate(dayNumber: day)
            return WindowPeriod(window: self, key: date.isoText, startDay: day, endDay: day + 1)
        case .weekly:
            let week = ISOWeek(dayNumber: day)
            return WindowPeriod(window: self, key: week.key, startDay: week.mondayDayNumber, endDay: week.mondayDayNumber + 7)
        case .monthly:
            let date = CivilDate(dayNumber: day)
            let first = CivilDate(year: date.year, month: date.month, day: 1)
            let next = date.month == 12 ? CivilDate(year: date.year + 1, month: 1, day: 1) : CivilDate(year: date.year, month: date.month + 1, day: 1)
            return WindowPeriod(
                window: self, key: "\(pad(date.year, 4))-\(pad(date.month, 2))", startDay: first.dayNumber, endDay: next.dayNumber)
        }
    }

    /// The period this window calls `key` (`all`, `2026-11-23`, `2026-W48`, `2026-11`), for archived queries.
    /// - Throws: ``ScoreboardError`` with code `invalidPeriod` when `key` names no period of this window.
    public func period(named key: String) throws(ScoreboardError) -> WindowPeriod {
        func invalid(_ why: String) -> ScoreboardError {
            ScoreboardError(code: .invalidPeriod, reasons: ["period \(key) of the \(rawValue) window: \(why)"])
        }
        let parts = key.split(separator: "-", omittingEmptySubsequences: false).map(String.init)
        switch self {
        case .allTime:
            guard key == "all" else { throw invalid("the all-time window has one period, all") }
            return period(containing: Timestamp(millisecondsSinceEpoch: 0))
        case .daily:
            guard parts.count == 3, parts[0].count == 4, parts[1].count == 2, parts[2].count == 2,
                  let year = Int(parts[0]), let month = Int(parts[1]), let day = Int(parts[2]) else {
                throw invalid("expected YYYY-MM-DD")
            }
            guard (1...12).contains(month), (1...CivilDate.daysIn(year: year, month: month)).contains(day) else {
                throw invalid("no such date")
            }
            return period(containing: Timestamp(days: CivilDate(year: year, month: month, day: day).dayNumber))
        case .weekly:
            guard parts.count == 2, parts[0].count == 4, parts[1].count == 3, parts[1].hasPrefix("W"),
                  let year = Int(parts[0]), let week = Int(parts[1].dropFirst()) else {
                throw invalid("expected YYYY-Www")
            }
            guard (1...ISOWeek.weeksIn(isoYear: year)).contains(week) else { throw invalid("\(year) has \(ISOWeek.weeksIn(isoYear: year)) ISO weeks") }
            return period(containing: Timestamp(days: ISOWeek.mondayOfWeek1(isoYear: year) + (week - 1) * 7))
        case .monthly:
            guard parts.count == 2, parts[0].count == 4, parts[1].count == 2, let year = Int(parts[0]), let month = Int(parts[1]) else {
                throw invalid("expected YYYY-MM")
            }
            guard (1...12).contains(month) else { throw invalid("no such month") }
            return period(containing: Timestamp(days: CivilDate(year: year, month: month, day: 1).dayNumber))
        }
    }
}

/// One period of a window: its key and its UTC bounds, `[start, end)`. All-time has no bounds.
public struct WindowPeriod: Hashable, Sendable, CustomStringConvertible {
    public var window: LeaderboardWindow
    /// `all`, `2026-11-23`, `2026-W48` or `2026-11`: part of board keys and of the query API's `period`.
    public var key: String
    public var start: Timestamp?
    public var end: Timestamp?

    init(window: LeaderboardWindow, key: String, start: Timestamp?, end: Timestamp?) {
        self.window = window
        self.key = key
        self.start = start
        self.end = end
    }

    init(window: LeaderboardWindow, key: String, startDay: Int, endDay: Int) {
        self.init(window: window, key: key, start: Timestamp(days: startDay), end: Timestamp(days: endDay))
    }

    public func contains(_ time: Timestamp) -> Bool {
        (start.map { time >= $0 } ?? true) && (end.map { time < $0 } ?? true)
    }

    /// Whether the period is over at `time` (never, for all-time).
    public func isClosed(at time: Timestamp) -> Bool {
        end.map { time >= $0 } ?? false
    }

    /// The period that follows this one (all-time has none).
    public var next: WindowPeriod? {
        end.map { window.period(containing: $0) }
    }

    public var description: String { "\(window.rawValue):\(key)" }
}

extension ScoreboardError.Code {
    public static let invalidPeriod = ScoreboardError.Code(name: "invalidPeriod")
}

// MARK: - Calendar arithmetic (proleptic Gregorian, UTC), without Foundation

private let millisecondsPerDay: Int64 = 86_400_000

extension Timestamp {
    init(days: Int) {
        self.init(millisecondsSinceEpoch: Int64(days) * millisecondsPerDay)
    }
}

/// A calendar date, converted to and from days since 1970-01-01 with Howard Hinnant's algorithms.
struct CivilDate: Hashable {
    var year: Int
    var month: Int
    var day: Int

    init(year: Int, month: Int, day: Int) {
        self.year = year
        self.month = month
        self.day = day
    }

    /// The day number (days since 1970-01-01) of the UTC day containing `time`, rounding down for negative times.
    static func dayNumber(containing time: Timestamp) -> Int {
        let ms = time.millisecondsSinceEpoch
        let days = ms / millisecondsPerDay
        return Int(ms % millisecondsPerDay < 0 ? days - 1 : days)
    }

    init(dayNumber: Int) {
        let z = dayNumber + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1_460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let shiftedMonth = (5 * dayOfYear + 2) / 153
        day = dayOfYear - (153 * shiftedMonth + 2) / 5 + 1
        month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9
        year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
    }

    var dayNumber: Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let shiftedMonth = month > 2 ? month - 3 : month + 9
        let dayOfYear = (153 * shiftedMonth + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    /// 1 = Monday … 7 = Sunday (1970-01-01 was a Thursday).
    static func isoWeekday(dayNumber: Int) -> Int {
        let zeroIsMonday = ((dayNumber + 3) % 7 + 7) % 7
        return zeroIsMonday + 1
    }

    static func isLeap(_ year: Int) -> Bool { (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 }

    static func daysIn(year: Int, month: Int) -> Int {
        switch month {
        case 2: return isLeap(year) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    var isoText: String { "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))" }
}

/// An ISO 8601 week: the week-year it belongs to (the year of its Thursday) and its number.
struct ISOWeek: Hashable {
    var isoYear: Int
    var week: Int
    var mondayDayNumber: Int

    init(dayNumber: Int) {
        let weekday = CivilDate.isoWeekday(dayNumber: dayNumber)
        mondayDayNumber = dayNumber - (weekday - 1)
        let thursday = mondayDayNumber + 3
        isoYear = CivilDate(dayNumber: thursday).year
        week = (thursday - ISOWeek.mondayOfWeek1(isoYear: isoYear)) / 7 + 1
    }

    /// Week 1 is the week with the year's first Thursday, that is, the week containing January 4th.
    static func mondayOfWeek1(isoYear: Int) -> Int {
        let january4 = CivilDate(year: isoYear, month: 1, day: 4).dayNumber
        return january4 - (CivilDate.isoWeekday(dayNumber: january4) - 1)
    }

    static func weeksIn(isoYear: Int) -> Int {
        (mondayOfWeek1(isoYear: isoYear + 1) - mondayOfWeek1(isoYear: isoYear)) / 7
    }

    var key: String { "\(pad(isoYear, 4))-W\(pad(week, 2))" }
}

private func pad(_ value: Int, _ width: Int) -> String {
    let text = String(value)
    return text.count >= width ? text : String(repeating: "0", count: width - text.count) + text
}
