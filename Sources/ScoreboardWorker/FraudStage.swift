import Foundation
import Logging
import Metrics
import ScoreboardCore

/// Fraud detection (`pipelines/fraud.yaml`, ``FraudDetector``) as a ``WorkerStage``: each new event is observed in log
/// order against its user's profile and the population's, both kept as stage state in the batch's transaction, so a
/// replay (whose events the ledger drops) changes neither. A flag is an append-once record whose id is derived from
/// what raised it (``FraudFlagMessage/flagID(userID:ruleID:triggeredBy:)``): a batch run again after a crash before
/// its commit raises the same flag under the same id, and the record is not written twice.
///
/// After commit, the flags are published to the fraud-flags topic and marked open for the gateway's adaptive limit
/// (``FraudFlagOutputs``); the outbox entry carries the flags themselves, so a recovering owner publishes exactly
/// them again (same ids: readers keep one per id), and does not count them again in `fraud_flags_total` (they were
/// counted, or are at least stored, when their batch committed). Findings of `outcome: log` rules are logged only.
///
/// State keys: `user:<id>` (a ``FraudUserProfile``, JSON) per user, and `population` (the population's Welford
/// statistics per feature, JSON), which every worker's batches share and take in turn (its row lock).
struct FraudStage: WorkerStage {
    let rules: FraudRuleSet
    /// `nil`: flags are stored, not published (a worker composed without the fraud-flags topic, as in some tests).
    let outputs: (any FraudFlagOutputs)?
    let logger: Logger

    var name: String { "fraud" }

    /// What a batch raised, published after commit.
    struct Due: Sendable {
        var findings: [FraudFlagMessage]
        /// Published again from the outbox by a recovering owner: neither counted nor logged again.
        var isRecovered = false
    }

    static let stageName = "fraud"
    static func userKey(_ userID: String) -> StageKey { StageKey(stage: stageName, key: "user:\(userID)") }
    static let populationKey = StageKey(stage: stageName, key: "population")

    func reads(for batch: StageInput) -> StageReads {
        guard !batch.applied.newEvents.isEmpty else { return .none }
        return StageReads(state: Set(batch.applied.newEvents.map { Self.userKey($0.userID) }).union([Self.populationKey]))
    }

    func rows(for batch: StageInput, state: StageState) throws -> StageRows<Due> {
        let events = batch.applied.newEvents
        guard !events.isEmpty else { return StageRows(due: Due(findings: [])) }
        // Events of one user share a partition, and the batch keeps each partition's log order: each user's events
        // are observed in the order they were accepted.
        return try rows(users: Set(events.map(\.userID)), state: state) { detector in
            events.flatMap { event in detector.observe(FraudObservation(event)).map { ($0, batch.partitions[event.eventID]) } }
        }
    }

    /// The state a batch of rejections reads: their users' profiles and the population.
    func reads(forRejections signals: [FraudRejectionSignal]) -> StageReads {
        guard !signals.isEmpty else { return .none }
        return StageReads(state: Set(signals.map { Self.userKey($0.userID) }).union([Self.populationKey]))
    }

    /// Step 1 for a batch of the rejections topic (``FraudRejectionConsumer``): the same state, records and outbox as
    /// for events, the outbox entries tagged with the rejections' partitions.
    func rows(forRejections signals: [FraudRejectionSignal], partitions: [String: Int32], state: StageState) throws -> StageRows<Due> {
        guard !signals.isEmpty else { return StageRows(due: Due(findings: [])) }
        return try rows(users: Set(signals.map(\.userID)), state: state) { detector in
            signals.flatMap { signal in detector.observe(signal).map { ($0, partitions[signal.rejectionID]) } }
        }
    }

    /// Loads the users' profiles and the population, lets `observe` run the detector over what the batch holds (each
    /// flag with the partition of what raised it), and returns what to write and publish.
    private func rows(
        users userIDs: Set<String>, state: StageState, observe: (inout FraudDetector) -> [(FraudFlag, Int32?)]
    ) throws -> StageRows<Due> {
        let decoder = JSONDecoder()
        var users: [String: FraudUserProfile] = [:]
        for userID in userIDs {
            if let stored = state[Self.userKey(userID)] { users[userID] = try decoder.decode(FraudUserProfile.self, from: Data(stored)) }
        }
        let population = try state[Self.populationKey].map { try decoder.decode([String: WelfordStatistics].self, from: Data($0)) } ?? [:]
        var detector = FraudDetector(rules: rules, state: FraudState(users: users, population: population))
        let raised = observe(&detector).map { (message: FraudFlagMessage($0.0), partition: $0.1) }

        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        var writes = StageWrites()
        for userID in userIDs {
            if let profile = detector.state.users[userID] { writes.state[Self.userKey(userID)] = Array(try encoder.encode(profile)) }
        }
        writes.state[Self.populationKey] = Array(try encoder.encode(detector.state.population))
        // Findings that only log are no flags: reviewers never see them, the gateway does not limit for them.
        for (message, _) in raised where message.outcome == .flag {
            writes.records.append(StageRecord(
                key: StageKey(stage: name, key: message.flagID), userID: message.userID,
                occurredAt: Timestamp(millisecondsSinceEpoch: message.detectedAt), payload: Array(try encoder.encode(message))))
        }
        var byPartition: [Int32: [FraudFlagMessage]] = [:]
        for (message, partition) in raised {
            // What raised a flag always has its partition; -1 only guards a caller that left it out.
            byPartition[partition ?? -1, default: []].append(message)
        }
        let outbox = try byPartition.sorted { $0.key < $1.key }.map { partition, messages in
            OutboxEntry(stage: name, partition: partition, payload: Array(try encoder.encode(messages)))
        }
        return StageRows(outbox: outbox, writes: writes, due: Due(findings: raised.map(\.message)))
    }

    func outputs(_ due: Due) async throws {
        guard !due.findings.isEmpty else { return }
        let flags = due.findings.filter { $0.outcome == .flag }
        for finding in due.findings where finding.outcome == .log && !due.isRecovered {
            logger.info("fraud finding (logged only)", metadata: [
                "fraud.rule": "\(finding.ruleID)", "fraud.user": "\(finding.userID)", "fraud.detail": "\(finding.detail)",
            ])
        }
        guard !flags.isEmpty else { return }
        try await outputs?.publishFlags(flags)
        guard !due.isRecovered else { return }
        for (rule, raised) in Dictionary(grouping: flags, by: \.ruleID) {
            Counter(label: "fraud_flags_total", dimensions: [("rule", rule)]).increment(by: raised.count)
        }
    }

    func recover(_ entries: [OutboxEntry]) async throws -> Due {
        let decoder = JSONDecoder()
        return Due(findings: try entries.flatMap { try decoder.decode([FraudFlagMessage].self, from: Data($0.payload)) }, isRecovered: true)
    }
}
