import Crypto
import Foundation
import JWTKit
import Logging
import ScoreboardCore
import ScoreboardDefinitions
import ScoreboardGateway
import ScoreboardHTTP
import ScoreboardRedis
import Testing
import Yams
import _CryptoExtras

/// Bearer tokens: pinned algorithms, known kids only, nbf and a maximum lifetime.
struct JWTHardeningTests {
    let now = Date()

    func claims(issuedAt: Date? = nil, expiresIn: TimeInterval = 600, notBefore: Date? = nil) -> ScoreboardClaims {
        ScoreboardClaims(
            subject: "alice", role: .player, region: nil, guild: nil, issuer: "scoreboard", audience: "scoreboard",
            issuedAt: issuedAt ?? now, expiresAt: (issuedAt ?? now).addingTimeInterval(expiresIn), notBefore: notBefore)
    }

    func kind(_ verifier: JWTAuthenticator, _ token: String) async -> Problem.Kind? {
        do {
            _ = try await verifier.authenticate(token: token, roles: [.player])
            return nil
        } catch let problem as Problem {
            return problem.kind
        } catch {
            return .internalError
        }
    }

    func rsaJWKS(alg: String?) throws -> (jwks: String, key: JWTKit.Insecure.RSA.PrivateKey) {
        let key = try JWTKit.Insecure.RSA.PrivateKey(backing: _RSA.Signing.PrivateKey(keySize: .bits2048))
        let components = try key.publicKey.getKeyPrimitives()
        let algorithm = alg.map { #","alg":"\#($0)""# } ?? ""
        let jwks = #"{"keys":[{"kty":"RSA","kid":"rsa-1"\#(algorithm),"n":"\#(Base64URL.encode(components.modulus))","e":"\#(Base64URL.encode(components.publicExponent))"}]}"#
        return (jwks, key)
    }

    @Test func aJWKWithoutAlgIsRefusedWhenLoaded() throws {
        // Bad input: an RSA key without "alg", an oct key without it, and an algorithm that does not fit the key type.
        let secret = Base64URL.encode(Data(repeating: 7, count: 32))
        for jwks in [
            try rsaJWKS(alg: nil).jwks, #"{"keys":[{"kty":"oct","kid":"h","k":"\#(secret)"}]}"#,
            try rsaJWKS(alg: "HS256").jwks, #"{"keys":[{"kty":"oct","kid":"h","alg":"HS256","k":"\#(secret)"},{"kty":"oct","kid":"h","alg":"HS256","k":"\#(secret)"}]}"#,
        ] {
            #expect(throws: ScoreboardError.self, "\(jwks.prefix(60))") { try JWKSFile.parse(Data(jwks.utf8), origin: "test") }
        }
    }

    @Test func aJunkTokenOfAnotherAlgorithmCannotBreakLaterValidTokens() async throws {
        let (jwks, key) = try rsaJWKS(alg: "RS256")
        let verifier = try await JWTAuthenticator(jwks: try JWKSFile.parse(Data(jwks.utf8), origin: "test"), configuration: .init(), redis: nil)
        // Bad input: a PS256 token naming the RS256 key (unauthenticated, so anyone can send it), first.
        let pss = await JWTKeyCollection().add(rsa: key, digestAlgorithm: .sha256, kid: "rsa-1")
        let junk = try await pss.sign(claims(), kid: "rsa-1")
        let ps256Header = Base64URL.encode(Data(#"{"alg":"PS256","kid":"rsa-1","typ":"JWT"}"#.utf8))
        let forged = ps256Header + "." + junk.split(separator: ".")[1] + "." + junk.split(separator: ".")[2]
        #expect(await kind(verifier, forged) == .unauthenticated)
        let rs256 = await JWTKeyCollection().add(rsa: key, digestAlgorithm: .sha256, kid: "rsa-1")
        let valid = try await rs256.sign(claims(), kid: "rsa-1")
        #expect(await kind(verifier, valid) == nil)
        #expect(await kind(verifier, forged) == .unauthenticated)
        #expect(await kind(verifier, valid) == nil)
    }

    @Test func anUnknownOrMissingKidNeverFallsBackToTheDefaultKey() async throws {
        let secret = SymmetricKey(data: Data(repeating: 9, count: 32))
        let jwks = #"{"keys":[{"kty":"oct","kid":"hs-1","alg":"HS256","k":"\#(Base64URL.encode(Data(repeating: 9, count: 32)))"}]}"#
        let verifier = try await JWTAuthenticator(jwks: try JWKSFile.parse(Data(jwks.utf8), origin: "test"), configuration: .init(), redis: nil)
        // Bad input: the right secret under a kid the JWKS does not list (jwt-kit would use its default key), and
        // no kid at all.
        let other = await JWTKeyCollection().add(hmac: HMACKey(key: secret), digestAlgorithm: .sha256, kid: "hs-unknown")
        #expect(await kind(verifier, try await other.sign(claims(), kid: "hs-unknown")) == .unauthenticated)
        let noKid = await JWTKeyCollection().add(hmac: HMACKey(key: secret), digestAlgorithm: .sha256)
        #expect(await kind(verifier, try await noKid.sign(claims())) == .unauthenticated)
        let listed = await JWTKeyCollection().add(hmac: HMACKey(key: secret), digestAlgorithm: .sha256, kid: "hs-1")
        #expect(await kind(verifier, try await listed.sign(claims(), kid: "hs-1")) == nil)
        // Bad input: a bearer token of 9,000 bytes is refused unread.
        #expect(await kind(verifier, String(repeating: "a", count: 9_000)) == .unauthenticated)
    }

    @Test func notBeforeAndTheMaximumLifetimeAreHonoured() async throws {
        let secret = SymmetricKey(data: Data(repeating: 9, count: 32))
        let jwks = #"{"keys":[{"kty":"oct","kid":"hs-1","alg":"HS256","k":"\#(Base64URL.encode(Data(repeating: 9, count: 32)))"}]}"#
        let verifier = try await JWTAuthenticator(jwks: try JWKSFile.parse(Data(jwks.utf8), origin: "test"), configuration: .init(), redis: nil)
        let keys = await JWTKeyCollection().add(hmac: HMACKey(key: secret), digestAlgorithm: .sha256, kid: "hs-1")
        func sign(_ claims: ScoreboardClaims) async throws -> String { try await keys.sign(claims, kid: "hs-1") }
        // Bad input: nbf an hour ahead; a token living two days (default maximum 24 h).
        #expect(await kind(verifier, try await sign(claims(notBefore: now.addingTimeInterval(3600)))) == .unauthenticated)
        #expect(await kind(verifier, try await sign(claims(expiresIn: 2 * 86_400))) == .unauthenticated)
        #expect(await kind(verifier, try await sign(claims(expiresIn: 86_400, notBefore: now.addingTimeInterval(-5)))) == nil)
    }
}

/// Keys, buffers, addresses and readiness: the pure parts of the gateway's defences.
struct GatewayDefenceTests {
    @Test func rateLimitKeysOfDifferentUsersAndLayersNeverCoincide() throws {
        let catalog = try PipelineCatalog.load(directory: GatewayHarness.root.appendingPathComponent("pipelines"))
        let now = Timestamp(millisecondsSinceEpoch: 1_795_000_000_000)
        func keys(_ user: String, _ action: String) -> Set<String> {
            Set(RateLimit.ingest(
                clientIP: "10.0.0.1", userID: user, action: action, definition: catalog.actions.actions[action]!, options: .init(), now: now
            ).map { RedisIngestState.key($0.scope) })
        }
        // Once, user "user" scoring pvp-win and a user named "pvp-win:minute" shared a key (another user got 429,
        // and a WRONGTYPE 500 where a counter met a sorted set).
        let users = ["user", "ip", "action", "pvp-win", "alice", "mint", "10.0.0.1"]
        var seen: [String: String] = [:]
        for user in users {
            for action in catalog.actions.actions.keys.sorted() {
                for key in keys(user, action) where !key.hasPrefix("sb:rl:ip:") {
                    if let owner = seen[key], owner != user { Issue.record("\(key) is both \(owner)'s and \(user)'s") }
                    seen[key] = user
                }
            }
        }
        #expect(!seen.keys.contains(RedisIngestState.key(RateLimit.mints(userID: "user", options: .init()).scope)))
    }

    @Test func junkRejectionsCannotEvictTokenManipulationSignals() throws {
        let log = RejectionLog(port: MemoryRejectionPublisher(), logger: Logger(label: "test"), capacityPerLane: 100)
        func rejection(_ reason: Problem.Kind, _ id: Int) -> Rejection {
            Rejection(
                rejectionID: "\(reason.rawValue)-\(id)", reason: reason.rawValue, userID: "u\(id)", clientIP: "10.0.0.1", action: nil,
                occurredAt: Timestamp(millisecondsSinceEpoch: 0), detail: nil)
        }
        // Bad input: a few forged and replayed tokens, then a flood of junk bodies far beyond the buffer.
        log.record(rejection(.actionTokenReplayed, 1))
        log.record(rejection(.invalidActionToken, 2))
        for id in 0..<10_000 { log.record(rejection(.invalidBody, id)) }
        log.record(rejection(.tokenRevoked, 3))
        let buffered = log.takeBuffered()
        #expect(buffered.prefix(3).map(\.reason) == ["action-token-replayed", "invalid-action-token", "token-revoked"])
        #expect(buffered.count == 103)
        #expect(buffered.last?.rejectionID == "invalid-body-9999", "junk keeps its newest")
    }

    @Test func forwardedForIsBelievedOnlyFromTrustedProxies() {
        let proxies = ["10.0.0.0/8", "2001:db8::/32"].compactMap(IPNetwork.init)
        #expect(proxies.count == 2)
        // A trusted peer: the right-most address that is not ours.
        #expect(ClientAddress.resolve(peer: "10.1.2.3", forwardedFor: ["198.51.100.7"], trustedProxies: proxies) == "198.51.100.7")
        #expect(ClientAddress.resolve(peer: "10.1.2.3", forwardedFor: ["1.1.1.1, 198.51.100.7", "10.9.9.9"], trustedProxies: proxies) == "198.51.100.7")
        #expect(ClientAddress.resolve(peer: "2001:db8::1", forwardedFor: ["203.0.113.5"], trustedProxies: proxies) == "203.0.113.5")
        // Bad input: an untrusted peer sending its own X-Forwarded-For; junk in the header; no proxies configured.
        #expect(ClientAddress.resolve(peer: "203.0.113.9", forwardedFor: ["1.2.3.4"], trustedProxies: proxies) == "203.0.113.9")
        #expect(ClientAddress.resolve(peer: "10.1.2.3", forwardedFor: ["not-an-ip"], trustedProxies: proxies) == "10.1.2.3")
        #expect(ClientAddress.resolve(peer: "10.1.2.3", forwardedFor: ["1.2.3.4"], trustedProxies: []) == "10.1.2.3")
        #expect(IPNetwork("10.0.0.0/33") == nil && IPNetwork("nope") == nil && IPNetwork("::/0") != nil)
    }

    @Test func readinessSaysWhatIsDownWithoutItsAddress() async {
        var configuration = RedisConfiguration(host: "127.0.0.1", port: 1)
        configuration.connectTimeout = .seconds(1)
        let redis = RedisConnectionPool(configuration: configuration, logger: Logger(label: "test"))
        defer { redis.close() }
        let problems = await OperationsRoutes.redisReadiness(redis, logger: Logger(label: "test"))
        #expect(problems == ["redis": "unreachable"])
    }
}

/// The request schemas in openapi.yaml are the ones the server checks (topics/requests/*.yaml), so a client
/// generating requests from the spec (schemathesis) and the server agree on what is valid.
struct RequestSchemaAgreementTests {
    func yaml(_ path: String) throws -> [String: Any] {
        try Yams.load(yaml: String(contentsOf: GatewayHarness.root.appendingPathComponent(path), encoding: .utf8)) as! [String: Any]
    }

    /// A schema without its annotations.
    func bare(_ schema: [String: Any]) -> NSDictionary {
        NSDictionary(dictionary: schema.filter { !["$schema", "title", "description"].contains($0.key) })
    }

    @Test func theSpecsRequestSchemasAreTheServers() throws {
        let components = (try yaml("openapi.yaml")["components"] as! [String: Any])["schemas"] as! [String: Any]
        func spec(_ name: String) -> [String: Any] { components[name] as! [String: Any] }
        #expect(bare(spec("ScoreRequest")) == bare(try yaml("topics/requests/score-request.v1.yaml")))
        #expect(bare(spec("RevocationRequest")) == bare(try yaml("topics/requests/revocation-request.v1.yaml")))
        // The batch: the envelope is checked as a whole, each item on its own (so the spec lets any item through).
        var batch = try yaml("topics/requests/batch-request.v1.yaml")
        var events = (batch["properties"] as! [String: Any])["events"] as! [String: Any]
        #expect(bare(spec("BatchItem")) == bare(events["items"] as! [String: Any]))
        events["items"] = ((spec("BatchRequest")["properties"] as! [String: Any])["events"] as! [String: Any])["items"]
        batch["properties"] = ["events": events]
        #expect(bare(spec("BatchRequest")) == bare(batch))
        // Path parameters that are identifiers say what the server's check says.
        let parameters = (try yaml("openapi.yaml")["components"] as! [String: Any])["parameters"] as! [String: Any]
        for name in ["userId", "action"] {
            let schema = (parameters[name] as! [String: Any])["schema"] as! [String: Any]
            #expect(schema["pattern"] as? String == ScoreEvent.identifierPattern && schema["maxLength"] as? Int == 64, "\(name)")
        }
    }
}
