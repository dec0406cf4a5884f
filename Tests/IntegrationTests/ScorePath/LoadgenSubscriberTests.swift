import Foundation
import Testing

extension ScorePath {
/// The load generator's subscribers against real role processes (gateway, worker, push): over WebSocket as over
/// SSE, each sees every accepted event, and the run reports 202 → update latencies.
@Suite(.serialized, .timeLimit(.minutes(4)))
struct LoadgenSubscriberTests {
    @Test(arguments: ["ws", "sse"]) func subscribersSeeEveryAcceptedEvent(transport: String) async throws {
        try await withScorePathWorld(redisDatabase: 24) { world in
            let worker = try await world.start("worker")
            let push = try await world.start("push")
            let gateway = try await world.gateway()
            try await ScorePathTests().waitUntilReady(port: push.port)
            // Players spread uniformly over many ids, so the catalog's per-player limits refuse nothing.
            let (status, output) = try await runCommand(
                Repository.executable.path,
                [
                    "loadgen", "--gateway", "http://127.0.0.1:\(gateway.port)", "--push", "http://127.0.0.1:\(push.port)", "--path", "batch",
                    "--rate", "20", "--duration", "2", "--batch-size", "2", "--users", "1000000", "--zipf", "0", "--connections", "2",
                    "--subscribers", "2", "--subscriber-transport", transport, "--drain", "30", "--json",
                ],
                environment: Repository.environment(world.environment))
            #expect(status == 0, "\(output.suffix(3_000))")
            let report = try #require(
                try JSONSerialization.jsonObject(with: Data(output.utf8.drop { $0 != UInt8(ascii: "{") })) as? [String: Any], "\(output.suffix(3_000))")
            let accepted = report["acceptedEvents"] as? Int ?? 0
            #expect(accepted >= 30, "\(output.suffix(3_000))")
            #expect((report["configuration"] as? [String: Any])?["subscriberTransport"] as? String == transport)
            #expect(report["unseenBySubscribers"] as? [Int] == [0, 0], "\(output.suffix(3_000))")
            // Both subscribers matched every accepted event.
            #expect(((report["endToEnd"] as? [String: Any])?["count"] as? Int ?? 0) == 2 * accepted)
            _ = worker  // the process lives as long as its handle
        }
    }
}
}
