import Metrics
import ScoreboardCore
import ScoreboardHTTP

// The pipeline shared by single and batch scores: each item checked on its own, the admitted ones published together,
// one answer per item.
extension ScoreIngest {
    struct Item: Sendable {
        var userID: String
        var action: String
        var definition: ActionDefinition
        var idempotencyKey: String
        var region: String?
        var guild: String?
        var fingerprint: String
        /// The action token, for player scores; game servers have none.
        var token: String?
        var source: ScoreEvent.Source
    }

    /// An event that passed every check, and the nonce of its action token.
    struct Admitted: Sendable {
        var event: ScoreEvent
        var nonce: String?
    }

    /// A child task's answer. A struct, not an `(Int, Admission)` tuple: Swift 6.3.1 at `-O` corrupts task-group
    /// results that are tuples built in a `do { return (i, try await …) } catch { return (i, …) }` child (indices
    /// and payloads come back as garbage; the release gateway crashed on the first 1,000-item batches under load).
    /// `scripts/repro/taskgroup-tuple-results.swift` reproduces it outside this code base.
    struct IndexedAdmission: Sendable {
        var index: Int
        var admission: Admission
    }

    enum Admission: Sendable {
        /// The idempotency key was answered before: the same answer again.
        case repeated(AcceptedScore)
        case admitted(Admitted)
        case refused(Problem)
    }

    /// Guards each item, publishes the admitted ones together, and answers per item. Nothing here throws: an item
    /// whose checks fail (Redis down for it, say) gets its own problem, and the others go on. So no item's claim is
    /// left behind by another's failure; a claimed item is either published or released by `settle`.
    func ingest(_ items: [Item], clientIP: String?) async -> [Result<AcceptedScore, Problem>] {
        var results = [Result<AcceptedScore, Problem>?](repeating: nil, count: items.count)
        var admitted: [(index: Int, admitted: Admitted)] = []
        let now = now()
        await withTaskGroup(of: IndexedAdmission.self) { group in
            for (index, item) in items.enumerated() {
                group.addTask {
                    do {
                        return IndexedAdmission(index: index, admission: try await self.admit(item, clientIP: clientIP, now: now))
                    } catch {
                        return IndexedAdmission(index: index, admission: .refused(self.problem(for: error)))
                    }
                }
            }
            for await result in group {
                let index = result.index
                switch result.admission {
                case .repeated(let answer): results[index] = .success(answer)
                case .admitted(let entry): admitted.append((index, entry))
                case .refused(let problem): results[index] = .failure(problem)
                }
            }
        }
        guard !admitted.isEmpty else { return results.map { $0! } }

        let settledEvents = admitted
        let state = self.state
        let reports = await publisher.publish(admitted.map(\.admitted.event), deadline: options.publishDeadline) { reports in
            // Runs once every report is in, even after the request gave up waiting: record the real outcome.
            for (entry, report) in zip(settledEvents, reports) {
                let item = items[entry.index]
                do {
                    switch report {
                    case .success(let position):
                        try await state.complete(
                            userID: item.userID, idempotencyKey: item.idempotencyKey,
                            record: IdempotencyRecord(fingerprint: item.fingerprint, answer: Self.answer(entry.admitted.event, position)))
                    case .failure:
                        try await state.release(userID: item.userID, idempotencyKey: item.idempotencyKey, tokenNonce: entry.admitted.nonce)
                    }
                } catch {
                    // The pending claim expires on its own; until then a retry is told the key is in use.
                }
            }
        }
        for (position, entry) in admitted.enumerated() {
            if let report = reports?[position], case .success(let landed) = report {
                results[entry.index] = .success(Self.answer(entry.admitted.event, landed))
                Counter(label: "gateway_events_accepted_total", dimensions: [("action", entry.admitted.event.action)]).increment()
            } else {
                results[entry.index] = .failure(Problem(
                    .brokerUnavailable, detail: reports == nil ? "the broker did not acknowledge in time" : "the broker refused the event",
                    retryAfter: options.unavailableRetryAfterSeconds))
            }
        }
        return results.map { $0! }
    }

    static func answer(_ event: ScoreEvent, _ position: EventPosition) -> AcceptedScore {
        AcceptedScore(
            eventID: event.eventID, partition: position.partition, offset: position.offset, userID: event.userID, action: event.action,
            points: event.points, occurredAt: event.occurredAt.millisecondsSinceEpoch)
    }

    /// One item's checks, cheapest first.
    private func admit(_ item: Item, clientIP: String?, now: Timestamp) async throws -> Admission {
        func fail(_ problem: Problem) -> Admission { .refused(problem) }
        let (banned, record) = try await state.precheck(userID: item.userID, idempotencyKey: item.idempotencyKey)
        if banned { return fail(Problem(.banned, detail: "user \(item.userID) is banned")) }
        if let record {
            guard record.fingerprint == item.fingerprint else {
                return fail(Problem(.idempotencyKeyReused, detail: "the key was first used for another request"))
            }
            if let answer = record.answer { return .repeated(answer) }
            return fail(Problem(.idempotencyKeyInUse, detail: "the first request with this key is still being published"))
        }
        var nonce: String?
        if let token = item.token {
            switch ActionToken.verify(token, userID: item.userID, action: item.action, now: now, keys: configuration.actionTokenKeys) {
            case .success(let parsed): nonce = parsed.nonce
            case .failure(.expired): return fail(Problem(.actionTokenExpired, detail: "action tokens live \(ActionToken.lifetimeMilliseconds / 1000) s"))
            case .failure(.invalid(let why)), .failure(.mismatch(let why)): return fail(Problem(.invalidActionToken, detail: why))
            }
        }
        let event = ScoreEvent(
            eventID: Self.eventID(userID: item.userID, idempotencyKey: item.idempotencyKey), userID: item.userID, action: item.action,
            points: item.definition.points, occurredAt: now, region: item.region, guild: item.guild, idempotencyKey: item.idempotencyKey,
            source: item.source)
        // The event must be valid by the topic's rules; a violation here is our bug or a bad token claim, never published.
        do {
            try event.validate()
        } catch {
            return fail(Problem(.invalidBody, errors: error.reasons))
        }
        let claim = IngestClaim(
            userID: item.userID, idempotencyKey: item.idempotencyKey, fingerprint: item.fingerprint, tokenNonce: nonce,
            tokenMemory: .milliseconds(ActionToken.lifetimeMilliseconds * 2), pendingLifetime: options.pendingClaimLifetime,
            limits: RateLimit.ingest(clientIP: clientIP, userID: item.userID, action: item.action, definition: item.definition, options: options, now: now),
            requestID: event.eventID, now: now)
        switch try await state.admit(claim) {
        case .admitted: return .admitted(Admitted(event: event, nonce: nonce))
        case .rateLimited(let limit, let wait):
            return fail(Problem(.rateLimited, detail: "limit \(limit)", retryAfter: Int((wait + 999) / 1000)))
        case .tokenReplayed: return fail(Problem(.actionTokenReplayed))
        case .idempotencyKeyInUse: return fail(Problem(.idempotencyKeyInUse))
        }
    }
}
