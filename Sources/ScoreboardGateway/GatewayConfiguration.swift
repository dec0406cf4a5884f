import ScoreboardCore
import ScoreboardHTTP

/// What the ingest gateway needs to know: where it listens, the keys it verifies with, the schemas and the action
/// catalog it checks requests against, and its tunables (``Options``).
public struct GatewayConfiguration: Sendable {
    /// The request schemas (`topics/requests/`), each checked before a body is decoded.
    public struct Schemas: Sendable {
        public var scoreRequest: JSONSchema
        public var batchRequest: JSONSchema
        public var revocationRequest: JSONSchema

        public init(scoreRequest: JSONSchema, batchRequest: JSONSchema, revocationRequest: JSONSchema) {
            self.scoreRequest = scoreRequest
            self.batchRequest = batchRequest
            self.revocationRequest = revocationRequest
        }
    }

    /// The tunables. Defaults suit production; tests and `scoreboard dev` raise the per-IP limit because every
    /// simulated player shares one loopback address.
    public struct Options: Sendable {
        public var perIPPerMinute = 600
        public var perUserPerMinute = 120
        /// The adaptive limit: scores per minute of a user with an open fraud flag (until a reviewer closes it).
        public var perFlaggedUserPerMinute = 1
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
        /// A pending idempotency claim outlives any publish attempt (the producer's delivery timeout), so a retry
        /// cannot race it.
        public var pendingClaimLifetime: Duration = .seconds(120)
        /// Not ready past this many events waiting for the broker's acknowledgement.
        public var maxUnacknowledgedEvents = 10_000

        public init() {}
    }

    public var server: HTTPServerSettings
    public var actions: ActionCatalog
    public var actionTokenKeys: ActionTokenKeys
    public var schemas: Schemas
    /// The bearer tokens' keys and the claims they must carry.
    public var jwks: JWKSFile
    public var authentication: JWTAuthenticator.Configuration
    public var options: Options

    public init(
        server: HTTPServerSettings, actions: ActionCatalog, actionTokenKeys: ActionTokenKeys, schemas: Schemas, jwks: JWKSFile,
        authentication: JWTAuthenticator.Configuration = .init(), options: Options = .init()
    ) {
        self.server = server
        self.actions = actions
        self.actionTokenKeys = actionTokenKeys
        self.schemas = schemas
        self.jwks = jwks
        self.authentication = authentication
        self.options = options
    }
}
