import Crypto
import Foundation
import ScoreboardCore
import ScoreboardHTTP

/// The HMAC secrets for action tokens, by `kid`. New tokens are signed with ``currentKeyID``; every listed key is
/// accepted, so a secret is rotated by adding a new one, making it current, and removing the old one a minute later
/// (a token lives 60 s).
///
/// File format: `{"current": "a2", "keys": {"a1": "<base64url, ≥ 32 bytes>", "a2": "…"}}`.
public struct ActionTokenKeys: Sendable {
    public var currentKeyID: String
    public var secrets: [String: SymmetricKey]

    public init(currentKeyID: String, secrets: [String: SymmetricKey]) throws {
        guard secrets[currentKeyID] != nil else {
            throw ScoreboardError(code: .invalidDefinition, reasons: ["action token keys: the current key \(currentKeyID) is not listed"])
        }
        self.currentKeyID = currentKeyID
        self.secrets = secrets
    }

    public static func load(path: String) throws -> ActionTokenKeys {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw ScoreboardError(code: .invalidDefinition, reasons: ["action token keys \(path): cannot be read"])
        }
        return try parse(data, origin: path)
    }

    public static func parse(_ data: Data, origin: String) throws -> ActionTokenKeys {
        struct File: Decodable { var current: String; var keys: [String: String] }
        guard let file = try? JSONDecoder().decode(File.self, from: data) else {
            throw ScoreboardError(code: .invalidDefinition, reasons: ["action token keys \(origin): expected {\"current\": kid, \"keys\": {kid: secret}}"])
        }
        var secrets: [String: SymmetricKey] = [:]
        for (kid, text) in file.keys {
            guard !kid.contains("."), let bytes = Base64URL.decode(text), bytes.count >= 32 else {
                throw ScoreboardError(code: .invalidDefinition, reasons: ["action token keys \(origin): key \(kid) needs a base64url secret of at least 32 bytes and a kid without dots"])
            }
            secrets[kid] = SymmetricKey(data: bytes)
        }
        return try ActionTokenKeys(currentKeyID: file.current, secrets: secrets)
    }

    /// A fresh file with one key, for local use.
    public static func makeLocal(kid: String = "local-a1") -> String {
        let secret = SymmetricKey(size: .bits256).withUnsafeBytes { Base64URL.encode(Data($0)) }
        return #"{"current":"\#(kid)","keys":{"\#(kid)":"\#(secret)"}}"# + "\n"
    }
}

/// A one-time permission to score one action: `v1.<kid>.<payload>.<mac>`, where the payload (base64url) is
/// `user \n action \n issued-at-ms \n nonce` and the MAC is HMAC-SHA256 over `v1.<kid>.<payload>`. The gateway
/// remembers used nonces in Redis, so a token scores at most once.
public struct ActionToken: Sendable, Hashable {
    public static let lifetimeMilliseconds: Int64 = 60_000

    public var userID: String
    public var action: String
    public var issuedAt: Timestamp
    public var nonce: String
    public var keyID: String

    public var expiresAt: Timestamp { Timestamp(millisecondsSinceEpoch: issuedAt.millisecondsSinceEpoch + Self.lifetimeMilliseconds) }

    public enum VerificationFailure: Error, Hashable, Sendable {
        /// Malformed, unknown key, or a MAC that does not match: forged or corrupted.
        case invalid(String)
        case expired
        /// Signed, but for another user or another action.
        case mismatch(String)
    }

    /// Signs a new token with the current key.
    public static func mint(userID: String, action: String, now: Timestamp, keys: ActionTokenKeys) -> String {
        let nonce = UUID().uuidString.lowercased()
        let payload = [userID, action, String(now.millisecondsSinceEpoch), nonce].joined(separator: "\n")
        let signed = "v1.\(keys.currentKeyID).\(Base64URL.encode(Data(payload.utf8)))"
        let mac = HMAC<SHA256>.authenticationCode(for: Data(signed.utf8), using: keys.secrets[keys.currentKeyID]!)
        return signed + "." + Base64URL.encode(Data(mac))
    }

    /// Checks the MAC (in constant time), the expiry, and that the token is this user's for this action.
    public static func verify(_ token: String, userID: String, action: String, now: Timestamp, keys: ActionTokenKeys)
        -> Result<ActionToken, VerificationFailure>
    {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard token.utf8.count <= 1024, parts.count == 4, parts[0] == "v1" else { return .failure(.invalid("not a v1 action token")) }
        guard let secret = keys.secrets[parts[1]] else { return .failure(.invalid("unknown key \(parts[1])")) }
        // Canonical encodings only: otherwise several spellings (differing in the unused low bits of the last
        // character) would verify as one token.
        guard let mac = Base64URL.decode(parts[3]), let payloadBytes = Base64URL.decode(parts[2]),
              Base64URL.encode(mac) == parts[3], Base64URL.encode(payloadBytes) == parts[2]
        else {
            return .failure(.invalid("not canonical base64url"))
        }
        let signed = Data("v1.\(parts[1]).\(parts[2])".utf8)
        // swift-crypto compares authentication codes in constant time.
        guard HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: signed, using: secret) else {
            return .failure(.invalid("the signature does not match"))
        }
        let fields = String(decoding: payloadBytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard fields.count == 4, let issued = Int64(fields[2]) else { return .failure(.invalid("malformed payload")) }
        let parsed = ActionToken(
            userID: fields[0], action: fields[1], issuedAt: Timestamp(millisecondsSinceEpoch: issued), nonce: fields[3], keyID: parts[1])
        guard parsed.userID == userID else { return .failure(.mismatch("the token belongs to another user")) }
        guard parsed.action == action else { return .failure(.mismatch("the token is for action \(parsed.action)")) }
        // A token from the future beyond a little clock skew is as suspicious as an old one.
        guard now < parsed.expiresAt, issued <= now.millisecondsSinceEpoch + 5_000 else { return .failure(.expired) }
        return .success(parsed)
    }
}
