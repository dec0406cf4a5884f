import Foundation
import Metrics
import ScoreboardCore

/// The batch's unreadable messages, published to the dead-letter topic after the batch commits: a fenced batch
/// publishes none, and each committed batch's letters land once (again only if the worker stops between publishing
/// and clearing its outbox entry, when the partition's next owner publishes them from the entry).
struct DeadLetterStage: WorkerStage {
    let outputs: any WorkerOutputs

    var name: String { "dead-letters" }

    /// A letter as kept in the outbox: its Kafka key is not part of its JSON.
    struct Stored: Codable {
        var letter: DeadLetter
        var key: [UInt8]?
    }

    func rows(for batch: StageInput, state: StageState) throws -> StageRows<[DeadLetter]> {
        guard !batch.deadLetters.isEmpty else { return StageRows(due: []) }
        let encoder = JSONEncoder()
        let outbox = try Dictionary(grouping: batch.deadLetters, by: \.sourcePartition).sorted { $0.key < $1.key }.map { partition, letters in
            OutboxEntry(stage: name, partition: partition, payload: Array(try encoder.encode(letters.map { Stored(letter: $0, key: $0.key) })))
        }
        return StageRows(outbox: outbox, due: batch.deadLetters)
    }

    func outputs(_ due: [DeadLetter]) async throws {
        guard !due.isEmpty else { return }
        try await outputs.publishDeadLetters(due)
        Counter(label: "worker_dead_letters_total").increment(by: due.count)
    }

    func recover(_ entries: [OutboxEntry]) async throws -> [DeadLetter] {
        let decoder = JSONDecoder()
        return try entries.flatMap { entry in
            try decoder.decode([Stored].self, from: Data(entry.payload)).map { stored in
                var letter = stored.letter
                letter.key = stored.key
                return letter
            }
        }
    }
}
