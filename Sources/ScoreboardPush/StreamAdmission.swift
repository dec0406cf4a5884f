import ScoreboardHTTP
import Synchronization

/// Caps on open streams (SSE responses and WebSocket connections), checked before a stream reads a snapshot or
/// registers with the feed, so a client over its cap holds nothing.
public struct StreamLimits: Sendable, Equatable {
    /// Streams one address may hold (anonymous streams count only here). Behind a proxy every client shares the
    /// proxy's address, so raise it there.
    public var perAddress = 32
    /// Streams one authenticated user may hold, from any address.
    public var perUser = 8
    /// Streams the process holds in all; past it, 503 `server-busy` with Retry-After.
    public var total = 20_000

    public init() {}
}

/// Counts open streams per address, per user and in all, against ``StreamLimits``.
public final class StreamAdmission: Sendable {
    struct Counts {
        var perAddress: [String: Int] = [:]
        var perUser: [String: Int] = [:]
        var total = 0
    }

    /// One admitted stream; its slot is released when the ticket goes away (the response body or connection that
    /// holds it ends or is dropped), so no error path can leak a slot.
    public final class Ticket: Sendable {
        let admission: StreamAdmission
        let address: String?
        let user: String?

        init(admission: StreamAdmission, address: String?, user: String?) {
            self.admission = admission
            self.address = address
            self.user = user
        }

        deinit { admission.release(address: address, user: user) }
    }

    public let limits: StreamLimits
    private let counts = Mutex(Counts())

    public init(limits: StreamLimits) {
        self.limits = limits
    }

    /// Takes a slot for a stream from `address` (and `user`, when authenticated). Without an address, only the
    /// user counts (a WebSocket connection, already counted for its address, adding the personal channel).
    /// - Throws: ``Problem`` `too-many-streams` (429) over a per-address or per-user cap, `server-busy` (503) over
    ///   the total.
    public func admit(address: String?, user: String?) throws -> Ticket {
        let refusal = counts.withLock { counts -> Problem? in
            if address != nil && counts.total >= limits.total {
                return Problem(.serverBusy, detail: "the server holds \(limits.total) streams", retryAfter: 5)
            }
            if let address, counts.perAddress[address, default: 0] >= limits.perAddress {
                return Problem(.tooManyStreams, detail: "at most \(limits.perAddress) streams per address", retryAfter: 5)
            }
            if let user, counts.perUser[user, default: 0] >= limits.perUser {
                return Problem(.tooManyStreams, detail: "at most \(limits.perUser) streams per user", retryAfter: 5)
            }
            if let address {
                counts.total += 1
                counts.perAddress[address, default: 0] += 1
            }
            if let user { counts.perUser[user, default: 0] += 1 }
            return nil
        }
        if let refusal { throw refusal }
        return Ticket(admission: self, address: address, user: user)
    }

    fileprivate func release(address: String?, user: String?) {
        counts.withLock { counts in
            if let address {
                counts.total -= 1
                counts.perAddress[address, default: 1] -= 1
                if counts.perAddress[address] == 0 { counts.perAddress[address] = nil }
            }
            if let user {
                counts.perUser[user, default: 1] -= 1
                if counts.perUser[user] == 0 { counts.perUser[user] = nil }
            }
        }
    }

    /// Streams open now.
    public var openStreams: Int { counts.withLock { $0.total } }
}
