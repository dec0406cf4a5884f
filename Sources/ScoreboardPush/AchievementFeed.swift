import Foundation
import Logging
import Metrics
import NIOCore
import ScoreboardCore
import ServiceLifecycle

/// What the notifications topic tells the push role, in order.
public enum NotificationSourceEvent: Sendable, Equatable {
    /// The source holds its partitions and reads them from their end: what is announced from now on arrives.
    case assigned
    case notifications([AchievementNotification])
}

/// The notifications topic (Kafka), read from its end by every push process, in order per partition. The adapter owns
/// the decoding (a message that is not a notification is skipped).
public protocol NotificationSource: Sendable {
    /// Reads until graceful shutdown or cancellation, handing every event to `handle`, in order.
    func run(_ handle: @escaping @Sendable (NotificationSourceEvent) -> Void) async throws
}

/// The notifications topic in memory (``MemoryBatchSource``), for in-process tests: assigned at once.
public typealias MemoryNotificationSource = MemoryBatchSource<AchievementNotification>

extension MemoryBatchSource: NotificationSource where Value == AchievementNotification {
    public func run(_ handle: @escaping @Sendable (NotificationSourceEvent) -> Void) async throws {
        handle(.assigned)
        try await run { (notifications: [AchievementNotification]) in handle(.notifications(notifications)) }
    }
}

/// One achievement frame as the personal channel sends it, encoded once: an SSE event `achievement` (no `id:` line:
/// the personal channel resumes nothing, and a board stream's `Last-Event-ID` must stay a board sequence) whose
/// `data` is the JSON a WebSocket client gets as a text message, `{"id", "type": "achievement", "unlock"}`. `id` is
/// the unlock's record id: an unlock announced twice arrives twice with the same id, and the client keeps one.
public final class AchievementFrame: Sendable, Equatable, CustomStringConvertible {
    public let notification: AchievementNotification
    public let frame: EncodedFrame

    public init(_ notification: AchievementNotification) {
        self.notification = notification
        struct JSON: Encodable { var id: String; var type = "achievement"; var unlock: AchievementUnlock }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let json = (try? encoder.encode(JSON(id: notification.id, unlock: notification.unlock))) ?? Data("{}".utf8)
        var buffer = ByteBuffer()
        buffer.writeString("event: achievement\ndata: ")
        let jsonStart = buffer.writerIndex
        buffer.writeBytes(json)
        buffer.writeString("\n\n")
        frame = EncodedFrame(sse: buffer, json: buffer.getSlice(at: jsonStart, length: json.count)!)
    }

    public static func == (lhs: AchievementFrame, rhs: AchievementFrame) -> Bool { lhs.notification == rhs.notification }

    public var description: String { "achievement \(notification.id)" }
}

/// Reads the notifications (its ``NotificationSource``) and hands each unlock to the personal channels of its user
/// open on this process (``UpdateFeed/deliverPersonal(_:)``, the same subscriber buffers the board updates of that
/// user go to). Nothing is kept: a user who is not connected when the unlock is announced reads it from
/// `GET /v1/users/{id}/achievements`, where every stored unlock is listed with the same id. A client that subscribes
/// first and lists second misses none (it may see one in both: one per id).
///
/// It is ready (``isReady``, part of the push role's readiness) once the source holds its partitions: a client that
/// connects to a ready process gets every unlock announced from then on.
public final class AchievementFeed: Service, Sendable {
    let source: any NotificationSource
    let feed: UpdateFeed
    let logger: Logger
    private let assigned = Latch()
    private let gaveUp = Latch()

    public init(source: any NotificationSource, feed: UpdateFeed, logger: Logger) {
        self.source = source
        self.feed = feed
        self.logger = logger
    }

    /// The source holds its partitions, or it failed: a feed that cannot read its topic is logged and counted, but
    /// does not take the process's board streams out of service (they do not need it).
    public var isReady: Bool { assigned.isOpen || gaveUp.isOpen }

    public func run() async throws {
        do {
            try await source.run { [feed, assigned] event in
                switch event {
                case .assigned:
                    assigned.open()
                case .notifications(let notifications):
                    feed.deliverPersonal(notifications.map(AchievementFrame.init))
                    Counter(label: "push_achievements_received_total").increment(by: notifications.count)
                }
            }
        } catch {
            // The boards' streams go on: the personal channel only stops carrying unlocks (which the query lists).
            logger.error("the notifications topic cannot be read: achievements are not sent on personal channels", metadata: ["error": "\(error)"])
            Counter(label: "push_feed_failures_total", dimensions: [("feed", "notifications")]).increment()
            gaveUp.open()
            // Returning would end the process's service group: wait for its shutdown instead.
            try await gracefulShutdown()
        }
    }
}
