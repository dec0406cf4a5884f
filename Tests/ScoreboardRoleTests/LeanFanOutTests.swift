import Foundation
import NIOCore
import NIOEmbedded
import ScoreboardCore
@testable import ScoreboardPush
import Testing

/// What one subscriber costs the fan-out: an update is encoded once for all its subscribers, and an idle stream
/// needs no task or timer of its own (its reader parks on a continuation; a repeated task on its connection's event
/// loop wakes it for heartbeats and closes a connection whose write stalled).
struct LeanFanOutTests {
    static let board = BoardKey(window: .daily, period: "2026-11-25", dimension: .region, value: "eu")

    static func changes(_ sequence: Int64, _ members: [BoardChanges.Member]) -> SequencedUpdate {
        SequencedUpdate(sequence: sequence, changes: BoardChanges(board: board, members: members))
    }

    /// Where a buffer's readable bytes are: equal for buffers that share one storage.
    static func address(_ buffer: ByteBuffer) -> UInt {
        buffer.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
    }

    /// 200 subscribers of a board get one update. Before, every subscriber's send encoded it again (a JSONEncoder
    /// and a String per subscriber and update); now every SSE event and WebSocket message of it is the same bytes.
    @Test func anUpdateIsEncodedOnceForAllItsSubscribers() {
        let feed = UpdateFeed(source: MemoryUpdateSource(), logger: .init(label: "test"))
        let subscribers = (0..<200).map { _ in SubscriberBuffer(limit: 10) }
        for subscriber in subscribers { _ = feed.subscribe(subscriber, to: Self.board.stream, since: nil) }
        feed.deliver([(partition: 0, update: Self.changes(3, [.init(userID: "a", total: 5, rank: 1), .init(userID: "b", total: 2, rank: nil)]))])
        var sse: Set<UInt> = [], json: Set<UInt> = []
        for subscriber in subscribers {
            guard case .items(let items) = subscriber.takeNow(), let item = items.first else { Issue.record("a subscriber got nothing"); return }
            sse.insert(Self.address(PushGateway.sseEvent(item)))
            json.insert(Self.address(PushGateway.jsonBytes(item)))
        }
        #expect(sse.count == 1 && json.count == 1)
        // The WebSocket message is the SSE event's `data`, a slice of the same storage.
        let event = PushGateway.sseEvent(.update(Self.changes(3, [.init(userID: "a", total: 5, rank: 1)])))
        #expect(String(buffer: event).hasPrefix("id: 3\nevent: update\ndata: {"))
        #expect(String(buffer: event).hasSuffix("}\n\n"))
    }

    /// The hand-written frame is the JSON the encoder wrote before, field for field, escapes included (bad input:
    /// quotes, a backslash, a newline, a control character and non-ASCII text in the strings).
    @Test func theHandWrittenFrameIsTheEncodersJSON() throws {
        struct Member: Encodable { var userId: String; var total: Int64; var rank: Int? }
        struct Body: Encodable {
            var board: String, window: String, period: String, dimension: String, dimensionValue: String?, members: [Member]
        }
        struct Frame: Encodable { var type = "update"; var stream: String; var sequence: Int64; var update: Body }
        for value in ["eu", #"a"b\c"#, "line\nbreak\u{01}\t", "café/ü", nil] {
            var changes = BoardChanges(
                board: BoardKey(window: .weekly, period: "2026-W48", dimension: value == nil ? .global : .guild, value: value),
                members: [.init(userID: "u\"1", total: 42, rank: 3), .init(userID: "u2", total: 0, rank: nil)])
            changes.members.append(.init(userID: "ü\u{1F}", total: Int64.max, rank: 1))
            let update = SequencedUpdate(sequence: 9_000_000_000, changes: changes)
            let expected = Frame(
                stream: changes.streamID, sequence: update.sequence,
                update: Body(
                    board: changes.board, window: changes.window.rawValue, period: changes.period, dimension: changes.dimension.rawValue,
                    dimensionValue: changes.dimensionValue, members: changes.members.map { Member(userId: $0.userID, total: $0.total, rank: $0.rank) }))
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            let encoded = try JSONSerialization.jsonObject(with: try encoder.encode(expected)) as? NSDictionary
            let written = try JSONSerialization.jsonObject(with: Data(PushGateway.json(.update(update)).utf8)) as? NSDictionary
            #expect(encoded != nil && written == encoded, "\(value ?? "nil")")
        }
    }

    /// A parked reader is woken with nothing to send only once its idle deadline passed, and by nothing else
    /// than a tick (there is no timer of its own).
    @Test func anIdleReaderIsWokenOnlyPastItsDeadline() async {
        let buffer = SubscriberBuffer(limit: 10)
        let deadline = ContinuousClock.now + .seconds(3_600)
        let reader = Task { await buffer.next(idleDeadline: deadline) }
        while !buffer.hasWaitingReader { await Task.yield() }
        buffer.wakeIfIdle(at: deadline - .seconds(1))
        #expect(buffer.hasWaitingReader)
        buffer.wakeIfIdle(at: deadline)
        #expect(await reader.value == nil)
    }

    /// The stream's timer on its connection's event loop: a tick wakes the idle reader past its deadline, and
    /// closes the connection when a write has been pending longer than the write timeout (a client that stopped
    /// reading); a write that completes in time is left alone.
    @Test func theStreamTimerWakesIdleReadersAndClosesStalledConnections() async throws {
        let channel = NIOAsyncTestingChannel()
        try await channel.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).get()
        let buffer = SubscriberBuffer(limit: 10)
        let watchdog = WriteWatchdog()
        let timer = StreamTimer.start(channel: channel, buffer: buffer, watchdog: watchdog, writeTimeout: .seconds(10), interval: .seconds(1))
        defer { timer.cancel() }
        let reader = Task { await buffer.next(idleDeadline: .now) }
        while !buffer.hasWaitingReader { await Task.yield() }
        await channel.testingEventLoop.advanceTime(by: .seconds(1))
        #expect(await reader.value == nil)

        // A write that never completes (its client stopped reading).
        let (stalled, release) = AsyncStream.makeStream(of: Void.self)
        let writer = Task { try await watchdog.watching { for await _ in stalled {} } }
        while !watchdog.isStalled(after: .zero, at: .now + .seconds(1)) { await Task.yield() }
        #expect(!watchdog.isStalled(after: .seconds(10), at: .now))
        #expect(watchdog.isStalled(after: .seconds(10), at: .now + .seconds(11)))
        #expect(channel.isActive)
        // The tick compares with the real clock, so the timeout is what has to be short here.
        let quickTimer = StreamTimer.start(channel: channel, buffer: buffer, watchdog: watchdog, writeTimeout: .zero, interval: .seconds(1))
        defer { quickTimer.cancel() }
        await channel.testingEventLoop.advanceTime(by: .seconds(1))
        #expect(!channel.isActive, "the stalled connection was not closed")
        release.finish()
        try await writer.value
    }
}
