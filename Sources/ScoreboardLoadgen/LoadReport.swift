import Foundation
import Histogram

/// The running figures, for a progress line.
public struct LoadProgress: Sendable {
    public var elapsed: Duration
    public var scheduled: Int
    public var completed: Int
    public var accepted: Int
    public var acceptedPerSecond: Double
    public var queued: Int
    public var errors: Int
    /// Microseconds.
    public var latencyP99: UInt64
    public var endToEndP99: UInt64

    public var line: String {
        let seconds = Double(elapsed.components.seconds)
        var line = String(format: "[loadgen] %5.0fs  requests %d/%d  accepted %d (%.0f/s)  queued %d  errors %d",
                          seconds, completed, scheduled, accepted, acceptedPerSecond, queued, errors)
        line += "  p99 \(LoadReport.milliseconds(latencyP99))"
        if endToEndP99 > 0 { line += "  202→update p99 \(LoadReport.milliseconds(endToEndP99))" }
        return line
    }
}

/// What a run did and measured; printed as a table or as JSON (`--json`).
public struct LoadReport: Sendable, Codable {
    public struct Settings: Sendable, Codable {
        public var path: String
        public var rate: Double
        public var durationSeconds: Double
        public var batchSize: Int?
        public var users: Int
        public var zipfExponent: Double
        public var connections: Int
        public var subscribers: Int
        /// `sse` or `ws`, with subscribers.
        public var subscriberTransport: String?
        public var board: String?
        public var seed: UInt64

        init(_ configuration: LoadConfiguration) {
            path = configuration.path.rawValue
            rate = configuration.rate
            durationSeconds = configuration.duration.seconds
            batchSize = configuration.path == .batch ? configuration.batchSize : nil
            users = configuration.users
            zipfExponent = configuration.zipfExponent
            connections = configuration.connections
            subscribers = configuration.subscribers
            board = configuration.subscribers > 0 ? configuration.board : nil
            subscriberTransport = configuration.subscribers > 0 ? configuration.subscriberTransport.rawValue : nil
            seed = configuration.seed
        }
    }

    /// Percentiles in milliseconds.
    public struct Latency: Sendable, Codable {
        public var count: UInt64
        public var p50: Double
        public var p90: Double
        public var p99: Double
        public var p999: Double
        public var max: Double

        init(_ histogram: Histogram<UInt64>) {
            count = histogram.totalCount
            func ms(_ micros: UInt64) -> Double { Double(micros) / 1000 }
            p50 = ms(histogram.valueAtPercentile(50))
            p90 = ms(histogram.valueAtPercentile(90))
            p99 = ms(histogram.valueAtPercentile(99))
            p999 = ms(histogram.valueAtPercentile(99.9))
            max = ms(histogram.max)
        }
    }

    public var configuration: Settings
    public var sendSeconds: Double
    public var requests: Int
    public var scheduledRequests: Int
    public var acceptedEvents: Int
    public var acceptedPerSecond: Double
    /// Answered requests per second (of any status).
    public var requestsPerSecond: Double
    /// Answers by status (a batch counts each item's); "transport" counts connections that failed.
    public var statuses: [String: Int]
    public var lastError: String?
    /// From each request's intended send time to its answer (queueing included: no coordinated omission).
    public var latency: Latency
    /// From the moment a connection sent the request to its answer.
    public var serviceTime: Latency
    /// From a 202 to the update on a subscriber's stream, over every subscriber.
    public var endToEnd: Latency?
    /// Accepted events a subscriber had not seen when the drain time ran out, per subscriber.
    public var unseenBySubscribers: [Int]
    public var updatesPerSubscriber: [Int]

    init(
        configuration: Settings, sendSeconds: Double, counters: LoadCounters.Values, latency: Latency, service: Latency, endToEnd: Latency?,
        unseenBySubscribers: [Int], updatesPerSubscriber: [Int]
    ) {
        self.configuration = configuration
        self.sendSeconds = sendSeconds
        requests = counters.completed
        scheduledRequests = counters.scheduled
        acceptedEvents = counters.accepted
        acceptedPerSecond = sendSeconds > 0 ? Double(counters.accepted) / sendSeconds : 0
        requestsPerSecond = sendSeconds > 0 ? Double(counters.completed) / sendSeconds : 0
        var statuses = Dictionary(uniqueKeysWithValues: counters.statuses.map { (String($0.key), $0.value) })
        if counters.transportErrors > 0 { statuses["transport"] = counters.transportErrors }
        self.statuses = statuses
        lastError = counters.lastError
        self.latency = latency
        serviceTime = service
        self.endToEnd = endToEnd
        self.unseenBySubscribers = unseenBySubscribers
        self.updatesPerSubscriber = updatesPerSubscriber
    }

    public var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: (try? encoder.encode(self)) ?? Data(), as: UTF8.self)
    }

    public var table: String {
        var lines: [String] = []
        let settings = configuration
        let pace = settings.rate > 0 ? "\(Int(settings.rate))/s target (open loop)" : "closed loop"
        lines.append("loadgen: \(settings.path) path, \(pace) for \(Int(settings.durationSeconds)) s"
            + (settings.batchSize.map { ", \($0) events per batch" } ?? "") + ", \(settings.users) users (Zipf \(settings.zipfExponent)), "
            + "\(settings.connections) connections, \(settings.subscribers) subscribers"
            + (settings.subscriberTransport.map { " (\($0))" } ?? ""))
        lines.append(String(format: "accepted   %d events in %.1f s = %.0f events/s   requests %d of %d scheduled = %.0f/s", acceptedEvents,
                            sendSeconds, acceptedPerSecond, requests, scheduledRequests, requestsPerSecond))
        lines.append("statuses   " + statuses.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "  "))
        if let lastError { lines.append("last error \(lastError)") }
        lines.append("")
        lines.append("                          count       p50       p90       p99     p99.9       max   (ms)")
        func row(_ name: String, _ latency: Latency) -> String {
            name.padding(toLength: 24, withPad: " ", startingAt: 0)
                + String(format: " %9llu %9.2f %9.2f %9.2f %9.2f %9.2f", latency.count, latency.p50, latency.p90, latency.p99, latency.p999, latency.max)
        }
        lines.append(row("request (from schedule)", latency))
        lines.append(row("request (service time)", serviceTime))
        if let endToEnd {
            lines.append(row("202 → update", endToEnd))
            let unseen = unseenBySubscribers.reduce(0, +)
            lines.append("subscribers: \(updatesPerSubscriber.reduce(0, +)) updates received; \(unseen) accepted events not seen when the drain ended")
        }
        return lines.joined(separator: "\n")
    }

    static func milliseconds(_ micros: UInt64) -> String { String(format: "%.1f ms", Double(micros) / 1000) }
}
