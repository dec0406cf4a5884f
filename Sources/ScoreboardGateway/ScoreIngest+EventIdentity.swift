import Crypto
import Foundation
import ScoreboardCore

extension ScoreIngest {
    /// One canonical spelling of an idempotency key, used for every purpose (the stored claim, the event id, the
    /// event): the schema admits a UUID in either case, and two spellings of one key must be one request.
    static func canonicalIdempotencyKey(_ key: String) -> String { key.lowercased() }

    /// The event id is derived from the user and the idempotency key (a UUID version 8 over SHA-256), not drawn at
    /// random: if a gateway dies after the broker took an event but before the answer was stored, the client's retry
    /// publishes the *same* event id again, and the workers' deduplication by event id absorbs it.
    public static func eventID(userID: String, idempotencyKey: String) -> String {
        var bytes = Array(SHA256.hash(data: Array("\(userID)\n\(canonicalIdempotencyKey(idempotencyKey))".utf8)).prefix(16))
        bytes[6] = (bytes[6] & 0x0F) | 0x80  // version 8
        bytes[8] = (bytes[8] & 0x3F) | 0x80  // RFC 9562 variant
        return UUIDText.spell(bytes)
    }
}
