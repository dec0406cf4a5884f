import Crypto
import Foundation
import JWTKit
import ScoreboardHTTP
import Testing
import _CryptoExtras

struct AuthenticationTests {
    let now = Date()

    func claims(issuer: String = "scoreboard", audience: String = "scoreboard", role: Role = .player, issuedAt: Date? = nil, expiresIn: TimeInterval = 600)
        -> ScoreboardClaims
    {
        ScoreboardClaims(
            subject: "alice", role: role, region: "eu", guild: "dragons", issuer: issuer, audience: audience, issuedAt: issuedAt ?? now,
            expiresAt: now.addingTimeInterval(expiresIn))
    }

    /// A JWKS with an HS256 secret, a public ES256 key and a public RS256 key, plus collections to sign with.
    func keySet() async throws -> (verifier: JWTAuthenticator, es256: JWTKeyCollection, rs256: JWTKeyCollection, hs: JWTKeyCollection) {
        let ecKey = ES256PrivateKey()
        let ecParameters = ecKey.parameters!
        let rsaKey = try Insecure.RSA.PrivateKey(backing: _RSA.Signing.PrivateKey(keySize: .bits2048))
        let rsaComponents = try rsaKey.publicKey.getKeyPrimitives()
        let hsSecret = Data((0..<32).map { UInt8($0) })
        let jwks = """
            {"keys":[
              {"kty":"oct","kid":"hs-1","alg":"HS256","k":"\(Base64URL.encode(hsSecret))"},
              {"kty":"EC","kid":"ec-1","alg":"ES256","crv":"P-256","x":"\(ecParameters.x)","y":"\(ecParameters.y)"},
              {"kty":"RSA","kid":"rsa-1","alg":"RS256","n":"\(Base64URL.encode(rsaComponents.modulus))","e":"\(Base64URL.encode(rsaComponents.publicExponent))"}
            ]}
            """
        let file = try JWKSFile.parse(Data(jwks.utf8), origin: "test")
        let verifier = try await JWTAuthenticator(jwks: file, configuration: .init(), redis: nil)
        let es256 = await JWTKeyCollection().add(ecdsa: ecKey, kid: "ec-1")
        let rs256 = await JWTKeyCollection().add(rsa: rsaKey, digestAlgorithm: .sha256, kid: "rsa-1")
        let hs = await JWTKeyCollection().add(hmac: HMACKey(key: SymmetricKey(data: hsSecret)), digestAlgorithm: .sha256, kid: "hs-1")
        return (verifier, es256, rs256, hs)
    }

    @Test func tokensSignedWithAnyListedKeyVerify() async throws {
        let keys = try await keySet()
        for (collection, kid) in [(keys.hs, "hs-1"), (keys.es256, "ec-1"), (keys.rs256, "rsa-1")] {
            let token = try await collection.sign(claims(), kid: JWKIdentifier(string: kid))
            let identity = try await keys.verifier.authenticate(token: token, roles: [.player])
            #expect(identity.userID == "alice" && identity.region == "eu" && identity.guild == "dragons", "\(kid)")
        }
    }

    @Test func badTokensAreRefusedWithTheirProblem() async throws {
        let keys = try await keySet()
        func kind(_ token: String, roles: Set<Role> = [.player]) async -> Problem.Kind? {
            do {
                _ = try await keys.verifier.authenticate(token: token, roles: roles)
                return nil
            } catch let problem as Problem {
                return problem.kind
            } catch {
                return .internalError
            }
        }
        let sign = { (claims: ScoreboardClaims) in try await keys.hs.sign(claims, kid: JWKIdentifier(string: "hs-1")) }
        #expect(await kind(try await sign(claims(expiresIn: -10))) == .unauthenticated)
        #expect(await kind(try await sign(claims(issuer: "someone-else"))) == .unauthenticated)
        #expect(await kind(try await sign(claims(audience: "another-api"))) == .unauthenticated)
        #expect(await kind(try await sign(claims(issuedAt: now.addingTimeInterval(3600)))) == .unauthenticated)
        #expect(await kind(try await sign(claims(role: .player)), roles: [.gameServer]) == .forbiddenRole)
        // Signed by a key that is not in the JWKS (an unknown kid), and a token whose signature was altered.
        let stranger = await JWTKeyCollection().add(ecdsa: ES256PrivateKey(), kid: "ec-2")
        #expect(await kind(try await stranger.sign(claims(), kid: "ec-2")) == .unauthenticated)
        let good = try await sign(claims())
        #expect(await kind(String(good.dropLast(4)) + "AAAA") == .unauthenticated)
        #expect(await kind("not-a-jwt") == .unauthenticated)
    }

    @Test func jwksFilesAreChecked() {
        for bad in [#"{}"#, #"{"keys":[]}"#, #"{"keys":[{"kty":"oct"}]}"#] {
            #expect(throws: Error.self, "\(bad)") { try JWKSFile.parse(Data(bad.utf8), origin: "test") }
        }
    }
}
