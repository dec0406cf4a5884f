import ScoreboardCore
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// A keep-alive ``HTTPConnection`` whose every request must be answered within `deadline`; otherwise the connection
/// is closed and the request throws ``NoAnswer``. A server that hangs must show up as a failed request in the
/// generator's record, not hang the fault suite.
struct DeadlineHTTPConnection {
    struct NoAnswer: Error, CustomStringConvertible {
        var deadline: TimeAmount
        var description: String { "no answer within \(Double(deadline.nanoseconds) / 1e9) s" }
    }

    var connection: HTTPConnection
    let channel: any Channel
    let deadline: TimeAmount

    /// Runs `body` with a connection to `port` on loopback, closing it afterwards.
    static func with<T: Sendable>(port: Int, deadline: TimeAmount = .seconds(10), _ body: (inout DeadlineHTTPConnection) async throws -> T) async throws -> T {
        let (asyncChannel, channel) = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(5))
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return (try HTTPConnection.Channel(wrappingChannelSynchronously: channel), channel)
                }
            }
        return try await asyncChannel.executeThenClose { inbound, outbound in
            var connection = DeadlineHTTPConnection(
                connection: HTTPConnection(iterator: inbound.makeAsyncIterator(), outbound: outbound), channel: channel, deadline: deadline)
            return try await body(&connection)
        }
    }

    mutating func postJSON(_ path: String, token: String?, json: Any) async throws -> HTTPAnswer {
        let channel = self.channel
        let started = ContinuousClock.now
        let timer = channel.eventLoop.scheduleTask(in: deadline) { channel.close(promise: nil) }
        defer { timer.cancel() }
        do {
            return try await connection.postJSON(path, token: token, json: json)
        } catch {
            if ContinuousClock.now - started >= .nanoseconds(deadline.nanoseconds) { throw NoAnswer(deadline: deadline) }
            throw error
        }
    }
}
