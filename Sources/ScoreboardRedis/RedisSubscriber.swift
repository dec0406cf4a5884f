import Synchronization
import Dispatch
import Logging

/// A message received on a subscribed channel.
public struct RedisPubSubMessage: Sendable, Hashable {
    public var channel: String
    public var payload: [UInt8]

    public var text: String { String(decoding: payload, as: UTF8.self) }
}

/// A pub/sub subscription on a connection of its own.
///
/// Reading runs on the subscriber's own queue, waiting with `poll(2)` in short steps so that ending the stream is
/// noticed promptly. When the connection breaks (the server restarted) it reconnects and subscribes again;
/// messages published meanwhile are lost, as Redis pub/sub is at-most-once.
public enum RedisSubscriber {
    /// Subscribes to `channels` and returns the messages as they arrive. The stream ends when the consuming task
    /// stops iterating; it finishes with an error only when `configuration` cannot be connected to at all.
    ///
    /// The subscription is confirmed before this returns, so a message published after it is received.
    public static func subscribe(
        channels: [String], configuration: RedisConfiguration, logger: Logger
    ) async throws -> AsyncThrowingStream<RedisPubSubMessage, Error> {
        let connection = try await HiredisConnection.connect(configuration, label: "scoreboard.redis.subscriber")
        let queue = DispatchQueue(label: "scoreboard.redis.subscriber.read")
        // Confirm the subscription first (one reply per channel).
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
            queue.async {
                continuation.resume(with: Result {
                    try connection.writeOnQueue(["SUBSCRIBE"] + channels)
                    var confirmed = 0
                    while confirmed < channels.count {
                        guard let reply = try connection.readReplyOnQueue(timeout: configuration.commandTimeout) else {
                            throw RedisError(code: .connection, reason: "no SUBSCRIBE confirmation within \(configuration.commandTimeout)")
                        }
                        if reply.array?.first?.string == "subscribe" { confirmed += 1 }
                    }
                })
            }
        }
        let (stream, continuation) = AsyncThrowingStream<RedisPubSubMessage, Error>.makeStream()
        let stopped = StopFlag()
        continuation.onTermination = { _ in stopped.stop() }
        queue.async {
            readLoop(first: connection, queue: queue, channels: channels, configuration: configuration, stopped: stopped,
                     continuation: continuation, logger: logger)
        }
        return stream
    }

    private static func readLoop(
        first: HiredisConnection, queue: DispatchQueue, channels: [String], configuration: RedisConfiguration, stopped: StopFlag,
        continuation: AsyncThrowingStream<RedisPubSubMessage, Error>.Continuation, logger: Logger
    ) {
        var connection: HiredisConnection? = first
        var backoff: Duration = .milliseconds(50)
        while !stopped.isStopped {
            do {
                if connection == nil {
                    // Connecting blocks; this is the subscriber's own queue, which owns the connection from here on.
                    let fresh = try HiredisConnection.connectOnQueue(configuration, queue: queue)
                    try fresh.writeOnQueue(["SUBSCRIBE"] + channels)
                    connection = fresh
                    backoff = .milliseconds(50)
                    logger.info("Redis subscriber reconnected", metadata: ["redis.channels": "\(channels)"])
                }
                guard let reply = try connection!.readReplyOnQueue(timeout: .milliseconds(200)) else { continue }
                if let parts = reply.array, parts.count == 3, parts[0].string == "message",
                   let channel = parts[1].string, case .bulk(let payload) = parts[2] {
                    continuation.yield(RedisPubSubMessage(channel: channel, payload: payload))
                }
            } catch {
                logger.warning("Redis subscriber connection lost", metadata: ["error": "\(error)"])
                connection = nil
                // Back off between attempts while the server is away (up to 2 s), checking for stop meanwhile.
                let deadline = DispatchTime.now() + .milliseconds(backoff.wholeMilliseconds)
                while !stopped.isStopped && DispatchTime.now() < deadline { _ = stopped.wait(milliseconds: 50) }
                backoff = min(backoff * 2, .seconds(2))
            }
        }
        continuation.finish()
    }

}

/// Set once when the stream's consumer goes away; the read loop checks it between reads, and a reconnection backoff
/// waits on it so that stopping cuts the wait short. An atomic and a semaphore, both thread-safe: checked `Sendable`.
private final class StopFlag: Sendable {
    private let semaphore = DispatchSemaphore(value: 0)
    private let stoppedValue = Atomic<Bool>(false)

    var isStopped: Bool { stoppedValue.load(ordering: .acquiring) }

    func stop() {
        stoppedValue.store(true, ordering: .releasing)
        semaphore.signal()
    }

    func wait(milliseconds: Int) -> Bool {
        semaphore.wait(timeout: .now() + .milliseconds(milliseconds)) == .success
    }
}
