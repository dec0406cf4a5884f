import Foundation
import PostgresNIO
import ScoreboardPostgres

/// What a stalled run leaves to look at, printed beside the outcome: the offsets the workers stored, what PostgreSQL is
/// doing, what each worker says of itself, and whether the broker serves the log from the stored offsets to a fresh
/// consumer. Written for the full worker-kill run, which stalled after about a hundred rebalances (docs/reliability.md).
struct ChaosDiagnosis {
    let world: ChaosWorld

    struct Stored: Sendable {
        var partition: Int32
        var next: Int64
    }

    func report(workerPorts: [Int]) async -> [String] {
        var lines: [String] = []
        var stored: [Stored] = []
        let store = PostgresStore(configuration: world.postgres, logger: TestEnvironment.logger)
        do {
            (lines, stored) = try await store.withRunningClient { store in
                var lines: [String] = []
                var stored: [Stored] = []
                let rows = try await store.client.query(
                    "SELECT kafka_partition, next_offset, epoch, topic, extract(epoch FROM now() - updated_at)::float8 FROM consumer_offsets ORDER BY topic, kafka_partition")
                for try await (partition, next, epoch, topic, age) in rows.decode((Int32, Int64, Int64, String, Double).self) {
                    lines.append("offsets \(topic)[\(partition)]: next \(next), epoch \(epoch), updated \(Int(age)) s ago")
                    if topic.hasSuffix("score-events.v1") { stored.append(Stored(partition: partition, next: next)) }
                }
                let outbox = try await store.client.query("SELECT kafka_partition, count(*)::bigint FROM worker_outbox GROUP BY 1 ORDER BY 1")
                for try await (partition, count) in outbox.decode((Int32, Int64).self) { lines.append("outbox [\(partition)]: \(count) rows") }
                let activity = try await store.client.query("""
                    SELECT pid, state, coalesce(wait_event_type, ''), coalesce(wait_event, ''),
                           extract(epoch FROM now() - coalesce(xact_start, query_start))::float8, left(query, 120)
                    FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND state <> 'idle'
                    """)
                for try await (pid, state, waitType, wait, age, query) in activity.decode((Int32, String, String, String, Double?, String).self) {
                    lines.append("postgres pid \(pid) \(state) \(waitType)/\(wait) for \(Int(age ?? 0)) s: \(query)")
                }
                return (lines, stored)
            }
        } catch {
            lines.append("postgres diagnosis failed: \(error)")
        }
        for port in workerPorts {
            for path in ["/health/ready", "/metrics"] {
                do {
                    let answer = try await HTTPConnection.with(port: port) { try await $0.send(.GET, path) }
                    let body = String(decoding: answer.body, as: UTF8.self)
                    let kept = path == "/metrics"
                        ? body.split(separator: "\n").filter { $0.hasPrefix("worker_") && !$0.contains("_bucket") }.joined(separator: " | ")
                        : body
                    lines.append("worker :\(port) \(path) \(answer.status): \(kept.prefix(1500))")
                } catch {
                    lines.append("worker :\(port) \(path) failed: \(error)")
                }
            }
        }
        lines += await probe(stored: stored)
        return lines
    }

    /// A consumer outside the group, with the same librdkafka as the workers (PyPI's confluent-kafka, which the stack
    /// script installs), reads each partition from the stored offset: the log end it sees and how long the first
    /// message takes.
    private func probe(stored: [Stored]) async -> [String] {
        let topic = "\(world.namespace)scoreboard.score-events.v1"
        let script = """
            import sys, time, json
            from confluent_kafka import Consumer, TopicPartition
            topic, boot = sys.argv[1], sys.argv[2]
            for spec in sys.argv[3:]:
                part, off = map(int, spec.split("@"))
                c = Consumer({"bootstrap.servers": boot, "group.id": "chaos-probe", "enable.auto.commit": False})
                low, high = c.get_watermark_offsets(TopicPartition(topic, part), timeout=10)
                c.assign([TopicPartition(topic, part, off)])
                t = time.time(); first = None; got = 0
                while time.time() - t < 15 and got < 100:
                    for m in c.consume(100, 1.0):
                        if m.error(): print("partition", part, "error", m.error()); continue
                        if first is None: first = (round(time.time() - t, 2), m.offset())
                        got += 1
                print(f"probe partition {part}: stored {off}, watermarks {low}..{high}, first message after {first}, {got} read")
                c.close()
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script, topic, world.base.kafkaBrokers] + stored.map { "\($0.partition)@\($0.next)" }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        do {
            try process.run()
            let data = try await Task.detached { pipe.fileHandleForReading.readDataToEndOfFile() }.value
            process.waitUntilExit()
            return String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
        } catch {
            return ["probe failed: \(error)"]
        }
    }
}
