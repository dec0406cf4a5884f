import ScoreboardCore
import ScoreboardHTTP

/// The gateway's tunables. Defaults suit production; tests and `scoreboard dev` raise the per-IP limit because every
/// simulated player shares one loopback address.
public struct GatewayConfiguration: Sendable {
    public var perIPPerMinute = 600
    public var perUserPerMinute = 120
    /// Action tokens a user may mint per minute (banned users get none).
    public var actionTokensPerUserPerMinute = 120
    /// Our own proxies: `X-Forwarded-For` is believed only from these peers (see ``ClientAddress``). Empty: the TCP
    /// peer is the client.
    public var trustedProxies: [IPNetwork] = []
    /// `POST /v1/scores` bodies.
    public var maxBodyBytes = 4_096
    /// `POST /v1/events:batch` bodies and items.
    public var maxBatchBodyBytes = 512 * 1024
    public var maxBatchItems = 1_000
    /// Admin bodies (`POST /v1/admin/revocations`).
    public var maxAdminBodyBytes = 1_024
    /// How long a request waits for the broker's acknowledgement before answering 503.
    public var publishDeadline: Duration = .seconds(1)
    /// `Retry-After` for a 503.
    public var unavailableRetryAfterSeconds = 2
    public var topics = TopicNames()

    public init() {}
}

/// The 202 answer: where the event landed, and what the catalog made of it.
public struct AcceptedScore: Codable, Sendable, Hashable {
    public var eventID: String
    public var partition: Int32
    public var offset: Int64
    public var userID: String
    public var action: String
    public var points: Int64
    public var occurredAt: Int64

    enum CodingKeys: String, CodingKey {
        case eventID = "eventId", partition, offset, userID = "userId", action, points, occurredAt
    }

    public init(eventID: String, partition: Int32, offset: Int64, userID: String, action: String, points: Int64, occurredAt: Int64) {
        self.eventID = eventID
        self.partition = partition
        self.offset = offset
        self.userID = userID
        self.action = action
        self.points = points
        self.occurredAt = occurredAt
    }
}
