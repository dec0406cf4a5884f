import Metrics
import Synchronization

/// Open connections per transport, as gauges.
final class Connections: Sendable {
    static let shared = Connections()
    private let counts = Mutex<[String: Int]>([:])

    func change(_ gauge: Gauge, by delta: Int) {
        let value = counts.withLock { counts -> Int in
            counts[gauge.label + gauge.dimensions.description, default: 0] += delta
            return counts[gauge.label + gauge.dimensions.description]!
        }
        gauge.record(value)
    }
}
