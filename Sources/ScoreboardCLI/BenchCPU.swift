import Foundation

/// Where a benchmark's CPU goes: the CPU time of the local stack's servers (PostgreSQL, Redis, the broker), of the
/// role processes a benchmark started and of the benchmark's own process, read from `/proc` before and after a
/// measured phase. Throughput on a shared, noisy box varies from run to run; CPU per unit of work varies far less,
/// and on a 2-core box it names the limit: when the parts together need more than two cores' worth per second, no
/// change to one part's waiting lifts the rate, only less CPU per event (or more cores) does.
struct BenchCPU: Sendable {
    /// CPU seconds per part, by name.
    let seconds: [String: Double]

    /// The servers are found by process name (every PostgreSQL backend counts: the workers' connections live for the
    /// run, so their CPU is read while they run); `processes` are named explicitly.
    static func sample(_ processes: [String: Int32]) -> BenchCPU {
        var seconds: [String: Double] = [:]
        let servers = ["postgres": "PostgreSQL", "redis-server": "Redis", "tansu": "broker"]
        let pids = (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))?.compactMap { Int32($0) } ?? []
        for pid in pids {
            guard let (name, cpu) = processCPU(pid), let part = servers[name] else { continue }
            seconds[part, default: 0] += cpu
        }
        for (part, pid) in processes {
            if let (_, cpu) = processCPU(pid) { seconds[part, default: 0] += cpu }
        }
        return BenchCPU(seconds: seconds)
    }

    /// `(command name, user + system CPU seconds)` of a process, from `/proc/<pid>/stat`.
    static func processCPU(_ pid: Int32) -> (String, Double)? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")") else { return nil }
        let name = String(stat[stat.index(after: open)..<close])
        // Fields after the command name start at field 3 (state); utime and stime are fields 14 and 15.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (name, (user + system) / Double(sysconf(Int32(_SC_CLK_TCK))))
    }

    /// What a phase cost: CPU milliseconds per `per` units of work (events, requests) for each part, the total, and
    /// the rate the box's cores could carry at that cost.
    struct Cost: Sendable {
        var perUnit: [(part: String, milliseconds: Double)]
        var per: Int
        var total: Double { perUnit.reduce(0) { $0 + $1.milliseconds } }
        /// Units per second all cores could carry if these parts had the machine to themselves.
        var ceiling: Double { total > 0 ? Double(ProcessInfo.processInfo.activeProcessorCount) * 1000 * Double(per) / total : .infinity }

        func line(unit: String) -> String {
            let parts = perUnit.map { String(format: "%@ %.1f", $0.part, $0.milliseconds) }.joined(separator: ", ")
            return String(format: "CPU ms per %@ %@: %@; total %.1f ms → %d cores carry at most %.0f %@/s",
                          per.formatted(), unit, parts, total, ProcessInfo.processInfo.activeProcessorCount, ceiling, unit)
        }
    }

    /// The cost of `units` of work done between `self` (before) and `after`, per `per` units; parts in a stable order.
    func cost(until after: BenchCPU, units: Double, per: Int = 1_000) -> Cost {
        let parts = after.seconds.keys.sorted()
        let perUnit = parts.compactMap { part -> (String, Double)? in
            let used = after.seconds[part, default: 0] - seconds[part, default: 0]
            guard used > 0, units > 0 else { return nil }
            return (part, used * 1000 / units * Double(per))
        }
        return Cost(perUnit: perUnit, per: per)
    }
}
