import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import JWTKit
import ScoreboardCore

/// Who may do what. A token carries exactly one role.
public enum Role: String, Sendable, Codable, CaseIterable {
    /// A game client, scoring for itself.
    case player
    /// A trusted game server, reporting scores for many users (the batch endpoint).
    case gameServer = "game-server"
    /// An operator: bans, revocations, the fraud feed.
    case admin
}

/// The claims of a scoreboard bearer token.
public struct ScoreboardClaims: JWTPayload, Equatable {
    public var sub: SubjectClaim
    public var exp: ExpirationClaim
    public var iat: IssuedAtClaim
    /// Not valid before; optional, but honoured when present.
    public var nbf: NotBeforeClaim?
    public var iss: IssuerClaim
    public var aud: AudienceClaim
    public var jti: IDClaim
    public var role: Role
    public var region: String?
    public var guild: String?

    public init(
        subject: String, role: Role, region: String?, guild: String?, issuer: String, audience: String,
        issuedAt: Date, expiresAt: Date, notBefore: Date? = nil, id: String = UUID().uuidString.lowercased()
    ) {
        sub = SubjectClaim(value: subject)
        nbf = notBefore.map { NotBeforeClaim(value: $0) }
        exp = ExpirationClaim(value: expiresAt)
        iat = IssuedAtClaim(value: issuedAt)
        iss = IssuerClaim(value: issuer)
        aud = AudienceClaim(value: [audience])
        jti = IDClaim(value: id)
        self.role = role
        self.region = region
        self.guild = guild
    }

    /// jwt-kit calls this after the signature checked out; issuer, audience and `iat` are checked by
    /// ``JWTAuthenticator`` against its configuration.
    public func verify(using algorithm: some JWTAlgorithm) async throws {
        try exp.verifyNotExpired()
    }
}

/// The authenticated caller of a request.
public struct Identity: Sendable, Hashable {
    public var userID: String
    public var role: Role
    public var region: String?
    public var guild: String?
    public var tokenID: String
    public var expiresAt: Date
}

/// The signing keys: a JWKS file. Several keys may be valid at once, each named by its `kid`, so a key is rotated by
/// adding the new one, moving issuers over, and removing the old one. RS256 and ES256 keys are public JWKs; HS256
/// keys (for local use) are `oct` JWKs with the secret in `k`, which jwt-kit's JWK type does not read, so they are
/// added as HMAC keys here.
public struct JWKSFile: Sendable {

    public var keys: [(kid: String, type: String, object: [String: String])]

    public static func load(path: String) throws -> JWKSFile {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw ScoreboardError(code: .invalidDefinition, reasons: ["JWKS \(path): cannot be read (\(error.localizedDescription))"])
        }
        return try parse(data, origin: path)
    }

    public static func parse(_ data: Data, origin: String) throws -> JWKSFile {
        guard let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let keys = root["keys"] as? [[String: Any]] else {
            throw ScoreboardError(code: .invalidDefinition, reasons: ["JWKS \(origin): expected {\"keys\": [...]}"])
        }
        var parsed: [(kid: String, type: String, object: [String: String])] = []
        for (index, key) in keys.enumerated() {
            let strings = key.compactMapValues { $0 as? String }
            guard let kid = strings["kid"], !kid.isEmpty, let type = strings["kty"] else {
                throw ScoreboardError(code: .invalidDefinition, reasons: ["JWKS \(origin): key \(index) needs kid and kty"])
            }
            // Without "alg", jwt-kit takes the algorithm from the first token's header and keeps it: one junk PS256
            // token would then break every RS256 login. So each key names its one algorithm.
            let allowed = Self.algorithms[type] ?? []
            guard let algorithm = strings["alg"], allowed.contains(algorithm) else {
                throw ScoreboardError(code: .invalidDefinition, reasons: [
                    "JWKS \(origin): key \(kid) needs \"alg\", one of \(allowed.sorted().joined(separator: ", ")) for kty \(type)",
                ])
            }
            guard !parsed.contains(where: { $0.kid == kid }) else {
                throw ScoreboardError(code: .invalidDefinition, reasons: ["JWKS \(origin): kid \(kid) appears twice"])
            }
            parsed.append((kid, type, strings))
        }
        if parsed.isEmpty { throw ScoreboardError(code: .invalidDefinition, reasons: ["JWKS \(origin): no keys"]) }
        return JWKSFile(keys: parsed)
    }

    /// The algorithms a key type may be pinned to.
    static let algorithms: [String: Set<String>] = [
        "oct": ["HS256", "HS384", "HS512"],
        "RSA": ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"],
        "EC": ["ES256", "ES384", "ES512"],
    ]

    /// Each key's pinned algorithm, by kid.
    public var algorithmsByKeyID: [String: String] {
        Dictionary(uniqueKeysWithValues: keys.map { ($0.kid, $0.object["alg"] ?? "") })
    }

    /// A collection that verifies with every key, and signs with the one a token's `kid` names.
    public func keyCollection() async throws -> JWTKeyCollection {
        let collection = JWTKeyCollection()
        for key in keys {
            if key.type == "oct" {
                guard let secret = key.object["k"].flatMap(Base64URL.decode), secret.count >= 32 else {
                    throw ScoreboardError(code: .invalidDefinition, reasons: ["JWKS key \(key.kid): an oct key needs k, at least 32 bytes, base64url"])
                }
                let digest: DigestAlgorithm = switch key.object["alg"] {
                case "HS384": .sha384
                case "HS512": .sha512
                default: .sha256
                }
                await collection.add(hmac: HMACKey(key: SymmetricKey(data: secret)), digestAlgorithm: digest, kid: JWKIdentifier(string: key.kid))
            } else {
                let json = try JSONSerialization.data(withJSONObject: key.object)
                let jwk = try JSONDecoder().decode(JWK.self, from: json)
                try await collection.add(jwk: jwk)
            }
        }
        return collection
    }

    /// A fresh file with one HS256 key, for local use.
    public static func makeLocal(kid: String = "local-hs256-1") -> String {
        let secret = SymmetricKey(size: .bits256).withUnsafeBytes { Base64URL.encode(Data($0)) }
        return #"{"keys":[{"kty":"oct","kid":"\#(kid)","alg":"HS256","k":"\#(secret)"}]}"# + "\n"
    }
}

public enum Base64URL {
    public static func encode(_ data: some DataProtocol) -> String {
        Data(data).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    public static func decode(_ text: String) -> Data? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        return Data(base64Encoded: base64)
    }
}

/// Checks bearer tokens: signature (by `kid`), `exp`, `iat`, `iss`, `aud`, `sub`, the role, and the `jti` revocation
/// list (a ``TokenRevocations`` port: Redis in production, memory in tests).
public struct JWTAuthenticator: Sendable {
    public struct Configuration: Sendable {
        public var issuer: String
        public var audience: String
        /// Clock skew tolerated on `iat` and `nbf`.
        public var leeway: Duration
        /// The longest a token may live (`exp - iat`): a stolen token is worth at most this, and a revocation entry
        /// never has to outlive it.
        public var maximumLifetime: Duration

        public init(
            issuer: String = "scoreboard", audience: String = "scoreboard", leeway: Duration = .seconds(30),
            maximumLifetime: Duration = .seconds(86_400)
        ) {
            self.issuer = issuer
            self.audience = audience
            self.leeway = leeway
            self.maximumLifetime = maximumLifetime
        }
    }

    public let keys: JWTKeyCollection
    /// The one algorithm of each key, by kid: a token must name a listed kid and exactly its algorithm.
    public let algorithmsByKeyID: [String: String]
    public let configuration: Configuration
    /// `nil` skips the revocation check (only for tests of the token checks themselves).
    public let revocations: (any TokenRevocations)?

    public init(
        keys: JWTKeyCollection, algorithmsByKeyID: [String: String], configuration: Configuration, revocations: (any TokenRevocations)?
    ) {
        self.keys = keys
        self.algorithmsByKeyID = algorithmsByKeyID
        self.configuration = configuration
        self.revocations = revocations
    }

    /// An authenticator for the keys of a JWKS file.
    public init(jwks: JWKSFile, configuration: Configuration, revocations: (any TokenRevocations)?) async throws {
        self.init(
            keys: try await jwks.keyCollection(), algorithmsByKeyID: jwks.algorithmsByKeyID, configuration: configuration, revocations: revocations)
    }

    /// Bearer tokens longer than this are refused unread.
    static let maximumTokenBytes = 8_192

    /// The caller of `request`, or a `unauthenticated` / `token-revoked` / `forbidden-role` problem.
    public func authenticate(_ request: Request, roles: Set<Role>) async throws -> Identity {
        guard let header = request.headers[.authorization], header.lowercased().hasPrefix("bearer ") else {
            throw Problem(.unauthenticated, detail: "send Authorization: Bearer <token>")
        }
        return try await authenticate(token: String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces), roles: roles)
    }

    public func authenticate(token: String, roles: Set<Role>, now: Date = Date()) async throws -> Identity {
        try checkHeader(token)
        let claims: ScoreboardClaims
        do {
            claims = try await keys.verify(token, as: ScoreboardClaims.self)
        } catch let error as JWTError {
            throw Problem(.unauthenticated, detail: Self.reason(error))
        } catch {
            throw Problem(.unauthenticated, detail: "the token cannot be read")
        }
        let identity = try check(claims, now: now)
        guard roles.contains(identity.role) else {
            throw Problem(.forbiddenRole, detail: "role \(identity.role.rawValue) may not do this; allowed: \(roles.map(\.rawValue).sorted().joined(separator: ", "))")
        }
        if try await isRevoked(tokenID: identity.tokenID) { throw Problem(.tokenRevoked, detail: "jti \(identity.tokenID)") }
        return identity
    }

    /// The header checks jwt-kit does not make: the token names a `kid` we list (jwt-kit would fall back to a default
    /// key for an unknown or missing one) and exactly that key's algorithm.
    func checkHeader(_ token: String) throws {
        guard token.utf8.count <= Self.maximumTokenBytes else { throw Problem(.unauthenticated, detail: "the token is too long") }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let headerBytes = Base64URL.decode(String(parts[0])),
              case .object(let header)? = try? JSONValue.parse(headerBytes)
        else {
            throw Problem(.unauthenticated, detail: "the token is malformed")
        }
        guard let kid = header["kid"]?.stringValue, let algorithm = algorithmsByKeyID[kid] else {
            throw Problem(.unauthenticated, detail: "no key for the token's kid")
        }
        guard header["alg"]?.stringValue == algorithm else {
            throw Problem(.unauthenticated, detail: "key \(kid) signs only \(algorithm)")
        }
    }

    /// The claim checks jwt-kit leaves to us.
    public func check(_ claims: ScoreboardClaims, now: Date) throws -> Identity {
        guard claims.iss.value == configuration.issuer else { throw Problem(.unauthenticated, detail: "iss must be \(configuration.issuer)") }
        guard claims.aud.value.contains(configuration.audience) else { throw Problem(.unauthenticated, detail: "aud must include \(configuration.audience)") }
        let leeway = Double(configuration.leeway.components.seconds)
        guard claims.iat.value.timeIntervalSince(now) <= leeway else { throw Problem(.unauthenticated, detail: "iat is in the future") }
        if let notBefore = claims.nbf?.value, notBefore.timeIntervalSince(now) > leeway {
            throw Problem(.unauthenticated, detail: "the token is not valid yet (nbf)")
        }
        let lifetime = claims.exp.value.timeIntervalSince(claims.iat.value)
        guard lifetime <= Double(configuration.maximumLifetime.components.seconds) else {
            throw Problem(.unauthenticated, detail: "the token lives longer than \(configuration.maximumLifetime.components.seconds) s (exp - iat)")
        }
        if let problem = ScoreEvent.identifierProblem(claims.sub.value) { throw Problem(.unauthenticated, detail: "sub \(problem)") }
        if let region = claims.region, let problem = ScoreEvent.identifierProblem(region) { throw Problem(.unauthenticated, detail: "region \(problem)") }
        if let guild = claims.guild, let problem = ScoreEvent.identifierProblem(guild) { throw Problem(.unauthenticated, detail: "guild \(problem)") }
        guard !claims.jti.value.isEmpty else { throw Problem(.unauthenticated, detail: "jti is required") }
        return Identity(
            userID: claims.sub.value, role: claims.role, region: claims.region, guild: claims.guild, tokenID: claims.jti.value,
            expiresAt: claims.exp.value)
    }

    static func reason(_ error: JWTError) -> String {
        let text = String(describing: error).lowercased()
        if text.contains("expire") { return "the token has expired" }
        if text.contains("signature") { return "the signature does not verify" }
        if text.contains("kid") || text.contains("key") { return "no key for the token's kid" }
        return "the token is malformed"
    }

    /// Signs claims with the key `kid` names (for `scoreboard token mint` and tests).
    public static func sign(_ claims: ScoreboardClaims, keys: JWTKeyCollection, kid: String) async throws -> String {
        try await keys.sign(claims, kid: JWKIdentifier(string: kid))
    }
}
