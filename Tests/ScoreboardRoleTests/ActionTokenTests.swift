import Crypto
import Foundation
import ScoreboardCore
@testable import ScoreboardGateway
import ScoreboardHTTP
import Testing

struct ActionTokenTests {
    let keys = try! ActionTokenKeys.parse(Data(ActionTokenKeys.makeLocal(kid: "a1").utf8), origin: "test")
    let now = Timestamp(millisecondsSinceEpoch: 1_795_000_000_000)

    func later(_ milliseconds: Int64) -> Timestamp { Timestamp(millisecondsSinceEpoch: now.millisecondsSinceEpoch + milliseconds) }

    @Test func aFreshTokenVerifiesForItsUserAndAction() throws {
        let token = ActionToken.mint(userID: "alice", action: "complete-quest", now: now, keys: keys)
        let parsed = try ActionToken.verify(token, userID: "alice", action: "complete-quest", now: later(59_000), keys: keys).get()
        #expect(parsed.userID == "alice" && parsed.keyID == "a1" && parsed.issuedAt == now)
    }

    @Test func expiryWrongUserWrongActionAndForgeriesAreRefused() {
        let token = ActionToken.mint(userID: "alice", action: "complete-quest", now: now, keys: keys)
        #expect(ActionToken.verify(token, userID: "alice", action: "complete-quest", now: later(60_000), keys: keys) == .failure(.expired))
        #expect(ActionToken.verify(token, userID: "bob", action: "complete-quest", now: now, keys: keys) == .failure(.mismatch("the token belongs to another user")))
        guard case .failure(.mismatch) = ActionToken.verify(token, userID: "alice", action: "pvp-win", now: now, keys: keys) else {
            Issue.record("another action must not verify")
            return
        }
        // Every single-character change is refused (payload, kid or MAC), and so are truncation and junk.
        var characters = Array(token)
        for index in stride(from: 3, to: characters.count, by: 7) where characters[index] != "." {
            let original = characters[index]
            characters[index] = original == "x" ? "y" : "x"
            guard case .failure = ActionToken.verify(String(characters), userID: "alice", action: "complete-quest", now: now, keys: keys) else {
                Issue.record("a token changed at \(index) verified")
                return
            }
            characters[index] = original
        }
        for bad in ["", "v1", "v2.a1.x.y", String(token.dropLast()), token + "A", "v1.zz.\(token.split(separator: ".")[2]).\(token.split(separator: ".")[3])"] {
            guard case .failure(.invalid) = ActionToken.verify(bad, userID: "alice", action: "complete-quest", now: now, keys: keys) else {
                Issue.record("\(bad) verified")
                continue
            }
        }
    }

    @Test func rotationAcceptsEveryListedKeyAndSignsWithTheCurrent() throws {
        let old = ActionToken.mint(userID: "alice", action: "pvp-win", now: now, keys: keys)
        var rotated = keys
        rotated.secrets["a2"] = SymmetricKey(size: .bits256)
        rotated.currentKeyID = "a2"
        let new = ActionToken.mint(userID: "alice", action: "pvp-win", now: now, keys: rotated)
        #expect(new.hasPrefix("v1.a2."))
        #expect((try? ActionToken.verify(old, userID: "alice", action: "pvp-win", now: now, keys: rotated).get()) != nil)
        #expect((try? ActionToken.verify(new, userID: "alice", action: "pvp-win", now: now, keys: rotated).get()) != nil)
        rotated.secrets["a1"] = nil
        guard case .failure(.invalid) = ActionToken.verify(old, userID: "alice", action: "pvp-win", now: now, keys: rotated) else {
            Issue.record("a removed key still verifies")
            return
        }
    }

    @Test func keyFilesAreCheckedWhenLoaded() {
        for bad in [#"{}"#, #"{"current":"a","keys":{}}"#, #"{"current":"a","keys":{"a":"c2hvcnQ"}}"#, #"{"current":"a.b","keys":{"a.b":"\#(String(repeating: "A", count: 43))"}}"#] {
            #expect(throws: ScoreboardError.self, "\(bad)") { try ActionTokenKeys.parse(Data(bad.utf8), origin: "test") }
        }
    }
}

struct EventIdentityTests {
    @Test func theEventIDIsAUUIDFixedByUserAndIdempotencyKey() {
        let key = "0b5e2c1a-7f7e-4a6e-9f0e-3a1d2c3b4a59"
        let id = ScoreIngest.eventID(userID: "alice", idempotencyKey: key)
        #expect(UUIDText.isValid(id))
        #expect(Array(id)[14] == "8")
        #expect(id == ScoreIngest.eventID(userID: "alice", idempotencyKey: key.uppercased()))
        #expect(id != ScoreIngest.eventID(userID: "bob", idempotencyKey: key))
        #expect(id != ScoreIngest.eventID(userID: "alice", idempotencyKey: "1b5e2c1a-7f7e-4a6e-9f0e-3a1d2c3b4a59"))
        // Pinned: ids already in the log must come out the same from every version of the gateway (a retry after an
        // upgrade is deduplicated by this id). Computed independently: SHA-256 of "alice\n<key>", first 16 bytes,
        // version 8 and the RFC 9562 variant set, lowercase hex 8-4-4-4-12.
        #expect(id == "3531b169-e2ee-87e0-9675-e8067da9f32f")
    }

    @Test func uuidTextSpellsEveryByteInLowercaseHexWithDashes() {
        #expect(UUIDText.spell(Array(0..<16)) == "00010203-0405-0607-0809-0a0b0c0d0e0f")
        #expect(UUIDText.spell(Array(repeating: 0xFF, count: 16)) == "ffffffff-ffff-ffff-ffff-ffffffffffff")
        #expect(UUIDText.spell([0xA0, 0x0B] + Array(repeating: 0x5C, count: 14)) == "a00b5c5c-5c5c-5c5c-5c5c-5c5c5c5c5c5c")
    }
}
