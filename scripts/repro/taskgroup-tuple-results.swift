// Swift 6.3.1 (Linux x86_64), -O only: task-group child results that are `(Int, Enum)` tuples, returned from a
// child shaped `do { return (index, try await f(index)) } catch { return (index, …) }`, come back corrupted: indices
// are garbage and payloads belong to other children. -Onone is correct; so is the same child returning a struct, or
// using `try?` instead of do/catch. Found through the gateway (ScoreIngest+Pipeline.swift), which crashed in release
// on index out of range / nil unwrap under 1,000-item batches.
//
//   swiftc -parse-as-library -O scripts/repro/taskgroup-tuple-results.swift -o /tmp/repro && /tmp/repro
//   swiftc -parse-as-library -Onone scripts/repro/taskgroup-tuple-results.swift -o /tmp/repro && /tmp/repro
//
// Measured 2026-11-25: -O "bad indices: 107809, mismatched payloads: 66584" of 200,000; -Onone 0 and 0.
// Exits 1 when results are corrupted.
// Release-mode corruption of task-group child results: (Int, LargeMultiPayloadEnum) tuples.
struct Score: Sendable { var id: String; var partition: Int32; var offset: Int64; var user: String; var action: String; var points: Int64; var at: Int64 }
struct Event: Sendable { var id: String; var user: String; var action: String; var points: Int64; var at: Int64; var region: String?; var guild: String?; var key: String; var source: UInt8 }
struct Admitted: Sendable { var event: Event; var value: [UInt8]; var nonce: String? }
struct Failure: Sendable { var kind: UInt8; var detail: String?; var errors: [String]; var retryAfter: Int? }
enum Admission: Sendable { case repeated(Score); case admitted(Admitted); case refused(Failure) }

@inline(never) func admit(_ i: Int) async throws -> Admission {
    await Task.yield()
    let text = "user-\(i)-with-a-longer-name"
    switch i % 3 {
    case 0: return .repeated(Score(id: text, partition: 1, offset: Int64(i), user: text, action: "quest", points: 10, at: 5))
    case 1: return .admitted(Admitted(event: Event(id: text, user: text, action: "quest", points: 10, at: 5, region: "eu", guild: "g\(i)", key: text, source: 1), value: Array(text.utf8), nonce: nil))
    default:
        if i % 7 == 0 { throw CancellationError() }
        return .refused(Failure(kind: 2, detail: "maxLength exceeded \(i)", errors: ["a\(i)", "b"], retryAfter: 1))
    }
}

#if canImport(Glibc)
import Glibc
#endif

@main struct Repro {
    static func main() async {
        var bad = 0, mismatched = 0
        for round in 0..<200 {
            let count = 1000
            var seen = 0
            await withTaskGroup(of: (Int, Admission).self) { group in
                for index in 0..<count {
                    group.addTask {
                        do { return (index, try await admit(index)) } catch { return (index, .refused(Failure(kind: 0, detail: "\(error)", errors: [], retryAfter: nil))) }
                    }
                }
                for await (index, admission) in group {
                    if index < 0 || index >= count { bad += 1; if bad < 4 { print("bad index", index) } }
                    if case .admitted(let a) = admission, a.event.user != "user-\(index)-with-a-longer-name" { mismatched += 1; if mismatched < 3 { print("mismatch", index, a.event.user) } }
                    seen += 1
                }
            }
            if round % 50 == 0 { print("round \(round): seen \(seen), bad so far \(bad)") }
        }
        print("bad indices: \(bad), mismatched payloads: \(mismatched)")
        if bad + mismatched > 0 { exit(1) }
    }
}
