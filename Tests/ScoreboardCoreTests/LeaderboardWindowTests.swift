import ScoreboardCore
import Testing

/// Milliseconds since the epoch for a UTC date and time, computed independently of the code under test
/// (days from a table of known day numbers would be circular; this uses the plain year/month sums).
func utc(_ year: Int, _ month: Int, _ day: Int, _ hour: Int = 0, _ minute: Int = 0, _ second: Int = 0, ms: Int = 0) -> Timestamp {
    var days = 0
    for y in 1970..<year { days += (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 ? 366 : 365 }
    let monthLengths = [31, (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    for m in 1..<month { days += monthLengths[m - 1] }
    days += day - 1
    let seconds = Int64(days) * 86_400 + Int64(hour * 3_600 + minute * 60 + second)
    return Timestamp(millisecondsSinceEpoch: seconds * 1_000 + Int64(ms))
}

@Suite struct LeaderboardWindowTests {
    @Test func dayBoundaryIsMidnightUTC() {
        let lastMillisecond = utc(2026, 11, 23, 23, 59, 59, ms: 999)
        let daily = LeaderboardWindow.daily.period(containing: lastMillisecond)
        #expect(daily.key == "2026-11-23")
        #expect(daily.start == utc(2026, 11, 23))
        #expect(daily.end == utc(2026, 11, 24))
        #expect(daily.contains(lastMillisecond))
        let next = LeaderboardWindow.daily.period(containing: utc(2026, 11, 24))
        #expect(next.key == "2026-11-24")
        #expect(daily.next == next)
        #expect(!daily.isClosed(at: lastMillisecond) && daily.isClosed(at: utc(2026, 11, 24)))
    }

    @Test func isoWeeksRunMondayToSunday() {
        // 2026-11-23 is a Monday; 2026-11-29 a Sunday.
        let week = LeaderboardWindow.weekly.period(containing: utc(2026, 11, 25, 12))
        #expect(week.key == "2026-W48")
        #expect(week.start == utc(2026, 11, 23))
        #expect(week.end == utc(2026, 11, 30))
        #expect(LeaderboardWindow.weekly.period(containing: utc(2026, 11, 29, 23, 59, 59, ms: 999)).key == "2026-W48")
        #expect(LeaderboardWindow.weekly.period(containing: utc(2026, 11, 30)).key == "2026-W49")
    }

    @Test(arguments: [
        // (date, its ISO week): weeks that straddle the calendar year end.
        (utc(2024, 12, 30), "2025-W01"),   // Monday of the week holding 2025's first Thursday
        (utc(2025, 1, 1), "2025-W01"),
        (utc(2024, 12, 29), "2024-W52"),   // Sunday before it
        (utc(2021, 1, 3), "2020-W53"),     // 2020 had 53 ISO weeks
        (utc(2021, 1, 4), "2021-W01"),
        (utc(2026, 12, 31), "2026-W53"),   // 2026 starts on a Thursday: 53 weeks
        (utc(2027, 1, 3), "2026-W53"),
        (utc(2027, 1, 4), "2027-W01"),
    ])
    func isoWeekAtYearEnd(_ time: Timestamp, _ key: String) {
        #expect(LeaderboardWindow.weekly.period(containing: time).key == key)
    }

    @Test func monthsIncludingLeapFebruaryAndYearEnd() {
        let february = LeaderboardWindow.monthly.period(containing: utc(2024, 2, 29, 23, 59, 59, ms: 999))
        #expect(february.key == "2024-02")
        #expect(february.start == utc(2024, 2, 1) && february.end == utc(2024, 3, 1))
        let december = LeaderboardWindow.monthly.period(containing: utc(2026, 12, 31, 23, 59, 59, ms: 999))
        #expect(december.key == "2026-12")
        #expect(december.end == utc(2027, 1, 1))
        #expect(december.next?.key == "2027-01")
        #expect(LeaderboardWindow.daily.period(containing: utc(2026, 12, 31, 23, 59, 59, ms: 999)).next?.key == "2027-01-01")
    }

    @Test func allTimeNeverCloses() {
        let all = LeaderboardWindow.allTime.period(containing: utc(2026, 1, 1))
        #expect(all.key == "all" && all.start == nil && all.end == nil)
        #expect(all.contains(utc(2099, 12, 31)) && !all.isClosed(at: utc(2099, 12, 31)) && all.next == nil)
    }

    @Test func periodNamesRoundTrip() throws {
        for window in LeaderboardWindow.allCases {
            for time in [utc(2024, 2, 29, 5), utc(2024, 12, 30), utc(2026, 11, 23, 23, 59), utc(2027, 1, 3)] {
                let period = window.period(containing: time)
                #expect(try window.period(named: period.key) == period, "\(window) \(period.key)")
            }
        }
    }

    @Test(arguments: [
        (LeaderboardWindow.daily, "2026-02-29"), (.daily, "2026-13-01"), (.daily, "26-11-23"), (.daily, "2026-11-23T00"),
        (.weekly, "2026-W54"), (.weekly, "2025-W53"), (.weekly, "2026-W00"), (.weekly, "2026-48"),
        (.monthly, "2026-00"), (.monthly, "2026-1"), (.allTime, "2026"),
    ])
    func badPeriodNamesAreRejected(_ window: LeaderboardWindow, _ key: String) {
        #expect(throws: ScoreboardError.self) { try window.period(named: key) }
    }

    @Test func timesBeforeTheEpochRoundDown() {
        // Not a real score time, but the arithmetic must floor, not truncate toward zero.
        let period = LeaderboardWindow.daily.period(containing: Timestamp(millisecondsSinceEpoch: -1))
        #expect(period.key == "1969-12-31")
    }
}
