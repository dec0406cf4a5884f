import Logging
import Metrics
import ScoreboardCore
import ScoreboardHTTP

// The pipeline shared by single and batch scores: each item checked on its own (the state store asked for all of them
// at once), the admitted ones published together, one answer per item.
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

    /// An item that passed the checks made in the gateway, and the claim the state store decides next.
    struct Candidate: Sendable {
        var index: Int
        var event: ScoreEvent
        var nonce: String?
        var claim: IngestClaim
    }

    /// Guards the items, publishes the admitted ones together, and answers per item. Nothing here throws: an item
    /// whose checks fail gets its own problem, and the others go on (a store that cannot be asked at all fails every
    /// item still waiting for it). So no item's claim is left behind by another's failure; a claimed item is either
    /// published or released by `settle`.
    ///
    /// The state store is asked for the whole batch at once (one precheck, then the admissions in item order), so a
    /// batch costs a few round trips whatever its size; two items with one key behave as two requests would.
    func ingest(_ items: [Item], clientIP: String?) async -> [Result<AcceptedScore, Problem>] {
        var results = [Result<AcceptedScore, Problem>?](repeating: nil, count: items.count)
        let now = now()
        var admitted: [(index: Int, admitted: Admitted)] = []
        do {
            let prechecks = try await state.precheck(items.map { IngestKey(userID: $0.userID, idempotencyKey: $0.idempotencyKey) })
            guard prechecks.count == items.count else { throw IngestStateMisanswer(asked: items.count, answered: prechecks.count) }
            var candidates: [Candidate] = []
            for (index, (item, precheck)) in zip(items, prechecks).enumerated() {
                switch check(item, precheck: precheck, index: index, clientIP: clientIP, now: now) {
                case .claim(let candidate): candidates.append(candidate)
                case .repeated(let answer): results[index] = .success(answer)
                case .refused(let problem): results[index] = .failure(problem)
                }
            }
            if !candidates.isEmpty {
                let verdicts = try await state.admit(candidates.map(\.claim))
                guard verdicts.count == candidates.count else { throw IngestStateMisanswer(asked: candidates.count, answered: verdicts.count) }
                for (candidate, verdict) in zip(candidates, verdicts) {
                    switch verdict {
                    case .success(.admitted): admitted.append((candidate.index, Admitted(event: candidate.event, nonce: candidate.nonce)))
                    case .success(.rateLimited(let limit, let wait)):
                        results[candidate.index] = .failure(Problem(.rateLimited, detail: "limit \(limit)", retryAfter: Int((wait + 999) / 1000)))
                    case .success(.tokenReplayed): results[candidate.index] = .failure(Problem(.actionTokenReplayed))
                    case .success(.idempotencyKeyInUse): results[candidate.index] = .failure(Problem(.idempotencyKeyInUse))
                    case .failure(let error): results[candidate.index] = .failure(problem(for: error))
                    }
                }
            }
        } catch {
            // The store could not be asked: every item not yet answered gets the outage (none was admitted).
            let problem = problem(for: error)
            for index in results.indices where results[index] == nil { results[index] = .failure(problem) }
        }
        guard !admitted.isEmpty else { return results.map { $0! } }

        let settledEvents = admitted
        let state = self.state
        let (logger, storeWithin) = (self.logger, options.pendingClaimLifetime / 2)
        let reports = await publisher.publish(admitted.map(\.admitted.event), deadline: options.publishDeadline) { reports in
            // Runs once every report is in, even after the request gave up waiting: record the real outcome, all
            // answers in one call and all releases in another.
            var completions: [IngestCompletion] = []
            var releases: [IngestRelease] = []
            for (entry, report) in zip(settledEvents, reports) {
                let item = items[entry.index]
                let key = IngestKey(userID: item.userID, idempotencyKey: item.idempotencyKey)
                switch report {
                case .success(let position):
                    completions.append(IngestCompletion(
                        key: key, record: IdempotencyRecord(fingerprint: item.fingerprint, answer: Self.answer(entry.admitted.event, position))))
                case .failure:
                    releases.append(IngestRelease(key: key, tokenNonce: entry.admitted.nonce))
                }
            }
            // The 202s are promises: their answers are stored before the clients hear them (the publisher fulfils
            // after settling), and a store that fails is tried again while the keys' pending claims still hold, so a
            // repeat of the key gets this answer, never a second event with another occurredAt. Releases may fail:
            // the pending claims then expire on their own, and until then a retry is told the key is in use.
            if !completions.isEmpty {
                await Self.retrying("storing 202 answers", within: storeWithin, logger: logger) { try await state.complete(completions) }
            }
            if !releases.isEmpty { try? await state.release(releases) }
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

    /// Runs `body` until it succeeds or `limit` has passed, with capped backoff; logs an error when it gives up.
    static func retrying(_ what: String, within limit: Duration, logger: Logger, _ body: () async throws -> Void) async {
        let deadline = ContinuousClock.now + limit
        var backoff = RetryBackoff(initial: .milliseconds(50), maximum: .seconds(2))
        while true {
            do {
                try await body()
                return
            } catch {
                let delay = backoff.nextDelay()
                guard ContinuousClock.now + delay < deadline else {
                    logger.error("gave up \(what)", metadata: ["error": "\(error)", "attempts": "\(backoff.attempts)"])
                    return
                }
                if backoff.attempts == 1 { logger.warning("\(what) failed: retrying", metadata: ["error": "\(error)"]) }
                try? await Task.sleep(for: delay)
            }
        }
    }

    static func answer(_ event: ScoreEvent, _ position: EventPosition) -> AcceptedScore {
        AcceptedScore(
            eventID: event.eventID, partition: position.partition, offset: position.offset, userID: event.userID, action: event.action,
            points: event.points, occurredAt: event.occurredAt.millisecondsSinceEpoch)
    }

    /// What the gateway's own checks make of an item: a claim for the store to decide, or the item's answer.
    enum Check: Sendable {
        case claim(Candidate)
        /// The idempotency key was answered before: the same answer again.
        case repeated(AcceptedScore)
        case refused(Problem)
    }

    /// One item's checks made in the gateway, cheapest first, given what the store held before anything was spent:
    /// the claim to ask the store for, or the item's answer.
    private func check(_ item: Item, precheck: IngestPrecheck, index: Int, clientIP: String?, now: Timestamp) -> Check {
        func fail(_ problem: Problem) -> Check { .refused(problem) }
        if precheck.banned { return fail(Problem(.banned, detail: "user \(item.userID) is banned")) }
        if let record = precheck.record {
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
            limits: RateLimit.ingest(
                clientIP: clientIP, userID: item.userID, action: item.action, definition: item.definition, options: options, now: now,
                flagged: precheck.flagged),
            requestID: event.eventID, now: now)
        return .claim(Candidate(index: index, event: event, nonce: nonce, claim: claim))
    }
}

/// The state store answered a batch with the wrong number of answers: its bug, never taken as a pass.
struct IngestStateMisanswer: Error {
    var asked: Int
    var answered: Int
}
