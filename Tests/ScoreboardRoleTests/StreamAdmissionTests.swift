import ScoreboardHTTP
import ScoreboardPush
import Testing

/// Stream caps: per address, per user, in all; a slot comes back when its ticket goes.
struct StreamAdmissionTests {
    func limits(perAddress: Int = 2, perUser: Int = 2, total: Int = 10) -> StreamLimits {
        var limits = StreamLimits()
        limits.perAddress = perAddress
        limits.perUser = perUser
        limits.total = total
        return limits
    }

    func refusal(_ body: () throws -> Void) -> Problem? {
        do { try body() } catch let problem as Problem { return problem } catch { Issue.record("unexpected \(error)") }
        return nil
    }

    /// Bad input: one address opening a third stream with a cap of two; the same user from a third address.
    @Test func capsPerAddressAndPerUser() throws {
        let admission = StreamAdmission(limits: limits())
        let first = try admission.admit(address: "10.0.0.1", user: nil)
        var second: StreamAdmission.Ticket? = try admission.admit(address: "10.0.0.1", user: "alice")
        let overAddress = refusal { _ = try admission.admit(address: "10.0.0.1", user: nil) }
        #expect(overAddress?.kind == .tooManyStreams && overAddress?.status == .tooManyRequests && overAddress?.retryAfter != nil)

        let third = try admission.admit(address: "10.0.0.2", user: "alice")
        #expect(refusal { _ = try admission.admit(address: "10.0.0.3", user: "alice") }?.kind == .tooManyStreams)
        // A personal channel on an already counted connection counts for the user only.
        #expect(refusal { _ = try admission.admit(address: nil, user: "alice") }?.kind == .tooManyStreams)

        second = nil  // the stream ended: its slot is free again, for the address and the user
        _ = try admission.admit(address: "10.0.0.1", user: "alice")
        #expect(second == nil)
        withExtendedLifetime((first, third)) {}
    }

    @Test func theTotalCapIsServerBusy() throws {
        let admission = StreamAdmission(limits: limits(perAddress: 10, total: 2))
        let held = [try admission.admit(address: "a", user: nil), try admission.admit(address: "b", user: nil)]
        let busy = refusal { _ = try admission.admit(address: "c", user: nil) }
        #expect(busy?.kind == .serverBusy && busy?.status == .serviceUnavailable)
        #expect(admission.openStreams == 2)
        withExtendedLifetime(held) {}
    }
}
