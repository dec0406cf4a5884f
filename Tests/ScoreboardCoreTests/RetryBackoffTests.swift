import ScoreboardCore
import Testing

@Suite struct RetryBackoffTests {
    /// A deterministic generator, so the jitter is reproducible.
    struct Counter: RandomNumberGenerator {
        var state: UInt64 = 42
        mutating func next() -> UInt64 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return state
        }
    }

    @Test func delaysDoubleWithinJitterUpToTheCapAndResetAfterSuccess() {
        var backoff = RetryBackoff(initial: .milliseconds(100), maximum: .seconds(2))
        var generator = Counter()
        var steps: [Duration] = [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .milliseconds(1600)]
        steps += Array(repeating: .seconds(2), count: 200)
        for step in steps {
            let delay = backoff.nextDelay(using: &generator)
            #expect(delay >= step / 2 && delay <= step, "delay \(delay) outside [\(step / 2), \(step)]")
        }
        #expect(backoff.attempts == steps.count)
        backoff.reset()
        #expect(backoff.nextDelay(using: &generator) <= .milliseconds(100))
    }

    @Test func timeoutCancelsAnOperationThatDoesNotAnswer() async throws {
        await #expect(throws: TimeoutError.self) {
            try await withTimeout(.milliseconds(50)) { try await Task.sleep(for: .seconds(60)) }
        }
        #expect(try await withTimeout(.seconds(10)) { 7 } == 7)
    }
}
