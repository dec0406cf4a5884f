import Hummingbird
import ScoreboardCore
import ScoreboardHTTP

extension ScoreIngest {
    /// `POST /v1/events:batch`: one result per item, in order. Each item is checked against the item schema on its
    /// own, so one bad item spoils nothing else; the request as a whole only fails for authentication, a body that
    /// is not a batch at all, or when every item failed for an outage.
    public func batch(request: Request, context: ScoreboardRequestContext) async throws -> Response {
        var request = request
        let identity = try await authenticate(request, context: context, roles: [.gameServer])
        let clientIP = clientIP(request, context: context)
        func refuse(_ problem: Problem) -> Problem { reject(problem, userID: identity.userID, action: nil, clientIP: clientIP) }
        let value: JSONValue
        do {
            value = try await request.decodeJSONValue(limit: options.maxBatchBodyBytes)
        } catch let problem as Problem {
            throw refuse(problem)
        }
        if let events = value["events"]?.arrayValue, events.count > options.maxBatchItems {
            // 400, not 413: the body may be small (a thousand nulls); it is the batch that is too long for the schema.
            throw refuse(Problem(.invalidBody, detail: "at most \(options.maxBatchItems) events in a batch"))
        }
        var itemViolations: [Int: [String]] = [:]
        var envelopeViolations: [String] = []
        for violation in configuration.schemas.batchRequest.validate(value) {
            if let index = Self.batchItemIndex(violation.pointer) {
                itemViolations[index, default: []].append(violation.description)
            } else {
                envelopeViolations.append(violation.description)
            }
        }
        guard envelopeViolations.isEmpty, let events = value["events"]?.arrayValue else {
            throw refuse(Problem(.invalidBody, errors: envelopeViolations))
        }

        var items: [Item] = []
        var results: [Result<AcceptedScore, Problem>?] = Array(repeating: nil, count: events.count)
        for (index, event) in events.enumerated() {
            let userID = event["userId"]?.stringValue, action = event["action"]?.stringValue
            if let violations = itemViolations[index] {
                results[index] = .failure(Problem(.invalidBody, errors: violations))
            } else if let userID, let action, let key = event["idempotencyKey"]?.stringValue {
                if let definition = configuration.actions.actions[action] {
                    let region = event["region"]?.stringValue, guild = event["guild"]?.stringValue
                    items.append(Item(
                        userID: userID, action: action, definition: definition, idempotencyKey: Self.canonicalIdempotencyKey(key),
                        region: region, guild: guild, fingerprint: "\(action)|\(region ?? "")|\(guild ?? "")", token: nil, source: .gameServer))
                    continue
                }
                results[index] = .failure(Problem(.unknownAction, detail: "no action \(action)"))
            } else {
                results[index] = .failure(Problem(.invalidBody, errors: ["/events/\(index): is not a score"]))  // the schema requires these
            }
            if case .failure(let problem) = results[index] {
                // A user id that failed its own check is not repeated into the log.
                let knownUser = userID.flatMap { ScoreEvent.identifierProblem($0) == nil ? $0 : nil }
                record(problem, userID: knownUser, action: nil, clientIP: clientIP)
            }
        }
        var outcomes = await ingest(items, clientIP: nil).makeIterator()
        for index in results.indices where results[index] == nil {
            let outcome = outcomes.next()!
            results[index] = outcome
            if case .failure(let problem) = outcome, problem.status.code < 500 {
                record(problem, userID: events[index]["userId"]?.stringValue, action: events[index]["action"]?.stringValue, clientIP: clientIP)
            }
        }
        let final = results.map { $0! }
        if !final.isEmpty, final.allSatisfy({ result in
            if case .failure(let problem) = result { return problem.status == .serviceUnavailable } else { return false }
        }), case .failure(let first) = final[0] {
            throw Problem(first.kind, detail: "no event was accepted", retryAfter: first.retryAfter)
        }
        return try jsonResponse(BatchResponse(results: final.map(BatchResponse.Item.init)), status: .ok)
    }

    /// The item a violation of the batch schema belongs to: `/events/3/userId` and `/events/3` are item 3's; anything
    /// else (`/`, `/events`) is the envelope's.
    static func batchItemIndex(_ pointer: String) -> Int? {
        guard pointer.hasPrefix("/events/") else { return nil }
        let rest = pointer.dropFirst("/events/".count)
        let digits = rest.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty, digits.count == rest.count || rest.dropFirst(digits.count).hasPrefix("/") else { return nil }
        return Int(digits)
    }

    public struct BatchResponse: Codable, Sendable {
        public struct Item: Codable, Sendable {
            public struct ProblemSummary: Codable, Sendable {
                public var type: String
                public var detail: String?
                public var errors: [String]?
                public var retryAfter: Int?
            }
            public var status: Int
            public var accepted: AcceptedScore?
            public var problem: ProblemSummary?

            init(_ result: Result<AcceptedScore, Problem>) {
                switch result {
                case .success(let answer):
                    self.init(status: 202, accepted: answer, problem: nil)
                case .failure(let problem):
                    self.init(status: problem.status.code, accepted: nil, problem: ProblemSummary(
                        type: problem.kind.uri, detail: problem.detail, errors: problem.errors.isEmpty ? nil : problem.errors,
                        retryAfter: problem.retryAfter))
                }
            }

            init(status: Int, accepted: AcceptedScore?, problem: ProblemSummary?) {
                self.status = status
                self.accepted = accepted
                self.problem = problem
            }
        }
        public var results: [Item]
    }
}
