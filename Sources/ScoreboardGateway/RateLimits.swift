import ScoreboardCore

extension RateLimit {
    /// The limits of one score: per client IP (`nil` for game servers, whose batches come from one address), per
    /// user, the adaptive limit while the user has an open fraud flag, and the action's own from the catalog.
    public static func ingest(
        clientIP: String?, userID: String, action: String, definition: ActionDefinition, options: GatewayConfiguration.Options, now: Timestamp,
        flagged: Bool = false
    ) -> [RateLimit] {
        var limits: [RateLimit] = []
        if flagged {
            limits.append(RateLimit(
                name: "fraud-review", scope: .flagged(userID: userID), count: options.perFlaggedUserPerMinute, window: .sliding(milliseconds: 60_000)))
        }
        if let clientIP {
            limits.append(RateLimit(name: "ip", scope: .clientIP(clientIP), count: options.perIPPerMinute, window: .sliding(milliseconds: 60_000)))
        }
        limits.append(RateLimit(name: "user", scope: .user(userID), count: options.perUserPerMinute, window: .sliding(milliseconds: 60_000)))
        for limit in definition.limits {
            let name = "action:\(action):\(limit.per.rawValue)"
            if let sliding = limit.per.slidingMilliseconds {
                limits.append(RateLimit(
                    name: name, scope: .action(userID: userID, action: action, window: limit.per.rawValue), count: limit.count,
                    window: .sliding(milliseconds: sliding)))
            } else {
                // A calendar day always ends; the fallback only keeps a day's counter from living forever.
                let day = LeaderboardWindow.daily.period(containing: now)
                limits.append(RateLimit(
                    name: name, scope: .action(userID: userID, action: action, window: "day:\(day.key)"), count: limit.count,
                    window: .calendar(resetAt: day.end ?? Timestamp(millisecondsSinceEpoch: now.millisecondsSinceEpoch + 86_400_000))))
            }
        }
        return limits
    }

    /// The action tokens one user may mint: a sliding minute.
    public static func mints(userID: String, options: GatewayConfiguration.Options) -> RateLimit {
        RateLimit(name: "action-tokens", scope: .mint(userID: userID), count: options.actionTokensPerUserPerMinute, window: .sliding(milliseconds: 60_000))
    }
}
