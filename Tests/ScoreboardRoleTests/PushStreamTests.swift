import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import ScoreboardCore
@testable import ScoreboardPush
import Testing

/// Streams in process, fed by the memory updates log: resuming from the history, snapshots, new epochs.
struct PushStreamTests {
    static let globalStream = BoardStream(window: .allTime, dimension: .global, value: nil)
    static let lastEventID = HTTPField.Name("Last-Event-ID")!

    @Test func sseResumesFromTheHistoryBySequence() async throws {
        let world = PushWorld()
        try await world.withClient { client in
            await world.updates.send(.assigned([0]))
            await world.updates.publish((0..<5).map { sequenced($0) })
            async let response = client.execute(uri: "/v1/streams/sse/all-time/global", method: .get, headers: [Self.lastEventID: "2"])
            await world.streamsOpen(1)
            world.openStreams.endAll()
            let events = sseEvents(try await response.body)
            // Exactly the updates after 2, no snapshot, then the server's end.
            #expect(events.map(\.event) == ["update", "update", "end"])
            #expect(events.compactMap(\.id) == [3, 4])
        }
    }

    /// Bad input: a sequence the history no longer holds (trimmed), and one before anything the feed read.
    @Test func aClientBehindTheHistoryGetsASnapshot() async throws {
        var feed = UpdateFeed.Configuration()
        feed.historyPerStream = 10
        let world = PushWorld(feed: feed)
        world.live.setScores(["u": 29], on: .allTime())
        try await world.withClient { client in
            await world.updates.send(.assigned([0]))
            await world.updates.publish((0..<30).map { sequenced($0) })
            async let response = client.execute(uri: "/v1/streams/sse/all-time/global?since=2", method: .get)
            await world.streamsOpen(1)
            world.openStreams.endAll()
            let body = try await response.body
            let events = sseEvents(body)
            // The snapshot is labelled with the stream's latest sequence, so the client resumes after it.
            #expect(events.map(\.event) == ["snapshot", "end"])
            #expect(events.first?.id == 29)
            #expect(String(buffer: body).contains(#""userId":"u""#))
        }
    }

    @Test func aMalformedLastEventIDIs400() async throws {
        let world = PushWorld()
        try await world.withClient { client in
            try await client.execute(uri: "/v1/streams/sse/all-time/global", method: .get, headers: [Self.lastEventID: "abc"]) { response in
                #expect(response.status == .badRequest)
            }
        }
    }

    /// The log is a new incarnation (a broker that kept it in memory restarted): offsets start again from 0. Open
    /// streams are dropped (the client reconnects with its last sequence), and a sequence read from the old log is not
    /// resumed from in the new one. Before, the feed resumed old sequence 9 in the new log with 10...19, so the client
    /// missed the new log's 0...9; and open streams kept their old-log updates, which outrank the new ones.
    @Test func aNewIncarnationOfTheLogBeginsANewEpoch() async throws {
        let world = PushWorld()
        try await world.withClient { client in
            await world.updates.send(.assigned([0]))
            await world.updates.publish((0..<10).map { sequenced($0) })
            async let response = client.execute(uri: "/v1/streams/sse/all-time/global", method: .get, headers: [Self.lastEventID: "5"])
            await world.streamsOpen(1)
            await world.updates.send(.newIncarnation)
            let events = sseEvents(try await response.body)
            #expect(events.last?.event == "overflow")
            #expect(events.compactMap(\.id).allSatisfy { (6...9).contains($0) })
            #expect(world.feed.epoch == 1)

            let newLog = (0..<20).map { sequenced($0, total: 100 + $0) }
            await world.updates.publish(newLog)
            #expect(world.feed.subscribe(SubscriberBuffer(limit: 100), to: Self.globalStream, since: 9) == .snapshot(sequence: 19))
            #expect(world.feed.subscribe(SubscriberBuffer(limit: 100), to: Self.globalStream, since: 15) == .resume(Array(newLog[16...])))
        }
    }

    @Test func readinessWaitsForTheUpdatesLog() async throws {
        let world = PushWorld()
        try await world.withClient { client in
            try await client.execute(uri: "/health/ready", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                #expect(String(buffer: response.body).contains("kafka"))
            }
            await world.updates.send(.assigned([0, 1]))
            try await client.execute(uri: "/health/ready", method: .get) { response in
                #expect(response.status == .ok)
            }
        }
    }
}
