import ScoreboardCore
import Foundation
import Logging
import PostgresNIO
import ScoreboardCLI
import ScoreboardPostgres
import Synchronization
import Testing

/// PostgreSQL going away under a running `PostgresClient`, on a private cluster (see ``PrivatePostgres``): the process
/// survives it, the same client serves queries again once the server is back, and the errors seen meanwhile are the
/// ones ``PostgresStore/isTransient(_:)`` tells the roles to wait out.
@Suite(.serialized, .timeLimit(.minutes(5)))
struct PostgresOutageTests {
    // MARK: The crash, and reading rows without it

    /// The reproduction of PostgresNIO 1.33.2's crash, kept to show that the workaround is still needed: readers
    /// iterate `PostgresRowSequence`s of 20,000 rows each, a little slower than the socket delivers them (as a decoder
    /// does on a busy machine), and the server is stopped in immediate mode under them. The process dies on
    /// `preconditionFailure` in `RowStreamStateMachine.channelReadComplete`. Run in a child process so that this
    /// test can watch it die. If this test fails because the child survives, PostgresNIO has fixed the bug.
    @Test func rowSequencesCutByAnImmediateStopKillTheProcess() async throws {
        let child = try await OutageChild.run(.rowSequence)
        #expect(child.status.reason == .signal, "the child ended with \(child.status); output:\n\(child.output.suffix(3000))")
        #expect(child.output.contains("RowStreamStateMachine.swift"), "output:\n\(child.output.suffix(3000))")
        #expect(child.output.contains("How can we receive a body part, after a channelReadComplete"))
    }

    /// The same workload, reading every result with ``PostgresClient/queryRows(_:logger:file:line:)`` and running the
    /// worker-like transactions with ``PostgresClient/withTransactionRows(logger:_:)``, through five immediate stops
    /// and restarts: the process lives, no task hangs (with PostgresNIO's `withTransaction`, a ROLLBACK on the closed
    /// connection waited forever, and so did a query on a leased connection that had just closed), every reader
    /// reads again after each restart on the same client, and every error seen is one that
    /// ``PostgresStore/isTransient(_:)`` counts as transient.
    @Test func collectedRowsSurviveImmediateStopsAndTheClientRecovers() async throws {
        let child = try await OutageChild.run(.collectedRows)
        #expect(child.status.reason == .exit && child.status.code == 0, "the child ended with \(child.status); output:\n\(child.output.suffix(3000))")
        let report = try #require(child.output.split(separator: "\n").first { $0.hasPrefix(OutageChild.reportPrefix) },
                                  "no report; output:\n\(child.output.suffix(3000))")
        #expect(report.contains("cycles=\(OutageChild.cycles)"))
        #expect(report.contains("permanent=[]"), "errors not counted as transient: \(report)")
        #expect(!report.contains("transient=[]"), "the stops failed nothing, so they tested nothing: \(report)")
    }

    /// What the child process runs (the two tests above start it): enabled only in the child.
    @Test(.enabled(if: OutageChild.modeInThisProcess != nil))
    func outageChildWorkload() async throws {
        try await OutageChild.workload()
    }

    // MARK: Recovery without a new client

    /// An immediate stop and restart under an idle client: a query issued while the server is down waits for a
    /// connection (the pool queues it; cancelling its task ends the wait), and the same client serves queries again
    /// once the server is back.
    @Test func theClientRecoversFromAnImmediateStopAndRestart() async throws {
        try await withPrivatePostgres { cluster in
            let store = PostgresStore(configuration: cluster.configuration, logger: TestEnvironment.logger)
            try await store.withRunningClient { store in
                #expect(try await store.serverVersion().hasPrefix("15"))
                try await cluster.stopImmediately()

                // The lease waits while the pool cannot connect, and task cancellation ends the wait. (Nothing shows
                // that the request is queued; if the cancellation came first, the lease would throw
                // CancellationError at once, which the check below accepts too. The pause makes the wait the usual case.)
                let waiting = Task { try await store.client.queryRows("SELECT 1", logger: TestEnvironment.logger) }
                try await Task.sleep(for: .milliseconds(500))
                waiting.cancel()
                let cancelled = await #expect(throws: (any Error).self) { try await waiting.value }
                #expect(cancelled.map { ($0 as? ConnectionPoolError) == .requestCancelled || $0 is CancellationError } == true,
                        "\(String(describing: cancelled))")
                #expect(cancelled.map(PostgresStore.isTransient) == false, "our own cancellation is not the database's outage")

                try await cluster.start()
                try await within(.seconds(60)) {
                    try await Self.queryUntilAnswered(store)
                }
            }
        }
    }

    /// An outage longer than the pool's circuit-breaker time (60 s in PostgresNIO 1.33.2): a query waiting for a
    /// connection fails with `connectionCreationCircuitBreakerTripped` (transient), new queries fail at once with it,
    /// and once the server is back the same client serves queries again without being recreated.
    @Test func theClientRecoversAfterItsCircuitBreakerTrips() async throws {
        try await withPrivatePostgres { cluster in
            let store = PostgresStore(configuration: cluster.configuration, logger: TestEnvironment.logger)
            try await store.withRunningClient { store in
                _ = try await store.serverVersion()
                try await cluster.stopImmediately()

                let waited = await #expect(throws: ConnectionPoolError.self) {
                    try await within(.seconds(120)) { try await store.serverVersion() }
                }
                #expect(waited == .connectionCreationCircuitBreakerTripped)
                #expect(waited.map(PostgresStore.isTransient) == true)
                let atOnce = await #expect(throws: ConnectionPoolError.self) { try await store.serverVersion() }
                #expect(atOnce == .connectionCreationCircuitBreakerTripped)

                try await cluster.start()
                let restarted = ContinuousClock.now
                // The pool retries in the background with a growing backoff (about 15 s after a minute of failures).
                try await within(.seconds(90)) {
                    try await Self.queryUntilAnswered(store)
                }
                TestEnvironment.logger.notice("client answered again \(ContinuousClock.now - restarted) after the restart")
            }
        }
    }

    /// Queries until one is answered; every failure on the way must be transient.
    static func queryUntilAnswered(_ store: PostgresStore) async throws {
        while true {
            do {
                _ = try await withTimeout(.seconds(5)) { try await store.serverVersion() }
                return
            } catch let error as TimeoutError {
                _ = error  // the pool is still backing off: ask again
            } catch {
                #expect(PostgresStore.isTransient(error), "\(error)")
                try await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    // MARK: Deadlines

    /// Cancelling the task of a running query does not interrupt it (PostgresNIO 1.33.2 waits for the server's
    /// answer), so the deadline of a running statement is the server's `statement_timeout`: a statement that runs
    /// past it fails with SQLSTATE 57014, which counts as transient.
    @Test func aRunningQueryIgnoresCancellationAndStatementTimeoutEndsIt() async throws {
        try await withPrivatePostgres { cluster in
            var configuration = cluster.configuration
            configuration.statementTimeout = .milliseconds(300)
            let store = PostgresStore(configuration: configuration, logger: TestEnvironment.logger)
            try await store.withRunningClient { store in
                let timedOut = await #expect(throws: PSQLError.self) {
                    try await store.client.queryRows("SELECT pg_sleep(5)", logger: TestEnvironment.logger)
                }
                #expect(timedOut?.serverInfo?[.sqlState] == "57014")
                #expect(timedOut.map(PostgresStore.isTransient) == true)

                try await store.client.withConnection { connection in
                    try await connection.query("SET statement_timeout = 0", logger: TestEnvironment.logger)
                    let running = Task {
                        try await connection.queryRows("SELECT 'slept' FROM pg_sleep(2)", logger: TestEnvironment.logger)
                    }
                    // Cancel once the server runs it (seen from another connection), not before it was sent.
                    try await within(.seconds(10)) {
                        while try await store.client.queryRows("""
                            SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query = 'SELECT ''slept'' FROM pg_sleep(2)'
                            """, logger: TestEnvironment.logger).isEmpty {
                            try await Task.sleep(for: .milliseconds(20))
                        }
                    }
                    running.cancel()
                    // Not interrupted: the cancelled task still gets the answer.
                    let rows = try await running.value
                    #expect(try rows.first?.decode(String.self) == "slept")
                }
            }
        }
    }

    /// The server-side limits come from the URL too; a value that is not a number of milliseconds is refused.
    @Test func statementAndIdleTransactionTimeoutsFromTheURL() throws {
        let defaults = try PostgresConfiguration(url: "postgres://u@h:5432/db")
        #expect(defaults.statementTimeout == .seconds(30))
        #expect(defaults.idleInTransactionTimeout == .seconds(60))
        let set = try PostgresConfiguration(url: "postgres://u@h:5432/db?statement_timeout=0&idle_in_transaction_session_timeout=1500")
        #expect(set.statementTimeout == nil)
        #expect(set.idleInTransactionTimeout == .milliseconds(1500))
        let startup = set.clientConfiguration.options.additionalStartupParameters
        #expect(!startup.contains { $0.0 == "statement_timeout" })
        #expect(startup.contains { $0 == ("idle_in_transaction_session_timeout", "1500") })
        #expect(throws: StorageError.self) { try PostgresConfiguration(url: "postgres://u@h:5432/db?statement_timeout=5s") }
    }

    // MARK: Classification

    @Test func errorsARetryCannotFixAreNotTransient() async throws {
        try await TestEnvironment.withSharedStore { store in
            let syntax = await #expect(throws: PSQLError.self) { try await store.client.queryRows("SELEC 1", logger: TestEnvironment.logger) }
            #expect(syntax.map(PostgresStore.isTransient) == false)
            let division = await #expect(throws: PSQLError.self) { try await store.client.queryRows("SELECT 1 / 0", logger: TestEnvironment.logger) }
            #expect(division.map(PostgresStore.isTransient) == false)
        }
        #expect(!PostgresStore.isTransient(CancellationError()))
        #expect(!PostgresStore.isTransient(ConnectionPoolError.poolShutdown))
        #expect(!PostgresStore.isTransient(ConnectionPoolError.requestCancelled))
        #expect(PostgresStore.isTransient(ConnectionPoolError.connectionCreationCircuitBreakerTripped))
    }
}

extension TestEnvironment {
    /// A store on the shared server (only for reads that change nothing).
    static func withSharedStore<T: Sendable>(_ body: @escaping @Sendable (PostgresStore) async throws -> T) async throws -> T {
        try await PostgresStore(configuration: settings.postgres, logger: logger).withRunningClient(body)
    }
}

/// The workload of the crash reproduction, run in a child process: the test binary itself, filtered to
/// ``PostgresOutageTests/outageChildWorkload()``, with the private cluster and the read mode in its environment.
enum OutageChild {
    enum ReadMode: String, Sendable {
        /// Iterating `PostgresRowSequence`, as `ScoreLedger` does today.
        case rowSequence
        /// ``PostgresClient/queryRows(_:logger:file:line:)``.
        case collectedRows
    }

    static let cycles = 5
    static let reportPrefix = "OUTAGE-CHILD-REPORT"
    static let readers = 8
    static let transactions = 4

    static var modeInThisProcess: ReadMode? {
        ProcessInfo.processInfo.environment["SCOREBOARD_PG_OUTAGE_CHILD"].flatMap(ReadMode.init(rawValue:))
    }

    struct Ended {
        var status: ChildProcess
        var output: String
    }

    /// Starts a private cluster, runs the workload against it in a child process, and removes the cluster.
    static func run(_ mode: ReadMode) async throws -> Ended {
        try await withPrivatePostgres { cluster in
            let log = FileManager.default.temporaryDirectory.appendingPathComponent("outage-child-\(UUID().uuidString).log")
            defer { try? FileManager.default.removeItem(at: log) }
            var environment = ProcessInfo.processInfo.environment
            environment["SCOREBOARD_PG_OUTAGE_CHILD"] = mode.rawValue
            environment["SCOREBOARD_PG_OUTAGE_PORT"] = "\(cluster.port)"
            environment["SCOREBOARD_PG_OUTAGE_DATA"] = cluster.dataDirectory.path
            environment["SWIFT_BACKTRACE"] = "enable=no"  // the fatal error's message is enough, and a backtrace is slow
            let testBinary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
            let status = try await ChildProcess.run(
                [testBinary, "--testing-library", "swift-testing", "--filter", "outageChildWorkload"], environment: environment, output: log)
            return Ended(status: status, output: (try? String(contentsOf: log, encoding: .utf8)) ?? "")
        }
    }

    /// Readers and worker-like transactions run without pause while the cluster is stopped in immediate mode and
    /// started again ``cycles`` times; each stop comes once they have read a good deal since the last start.
    static func workload() async throws {
        let environment = ProcessInfo.processInfo.environment
        guard let mode = modeInThisProcess, let port = environment["SCOREBOARD_PG_OUTAGE_PORT"].flatMap(Int.init),
              let data = environment["SCOREBOARD_PG_OUTAGE_DATA"] else { return }
        let cluster = PrivatePostgres(port: port, dataDirectory: URL(fileURLWithPath: data))
        let store = PostgresStore(configuration: cluster.configuration, logger: TestEnvironment.logger)
        let progress = Progress()
        try await store.withRunningClient { store in
            try await store.client.query("""
                CREATE TABLE IF NOT EXISTS outage_totals (member integer PRIMARY KEY, points bigint NOT NULL);
                """, logger: TestEnvironment.logger)
            try await store.client.query("""
                INSERT INTO outage_totals SELECT m, 0 FROM generate_series(1, 1000) AS m ON CONFLICT DO NOTHING
                """, logger: TestEnvironment.logger)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for reader in 0..<readers { group.addTask { await read(store, mode: mode, progress: progress, task: reader) } }
                for index in 0..<transactions {
                    group.addTask {
                        await transact(store, mode: mode, first: Int32(index * 200 + 1), progress: progress, task: readers + index)
                    }
                }
                for cycle in 0...cycles {
                    do {
                        try await within(.seconds(90)) { try await progress.waitForRows(atLeast: 200_000) }
                    } catch {
                        FileHandle.standardError.write(Data("cycle \(cycle): \(error); tasks: \(progress.phases)\n".utf8))
                        throw error
                    }
                    if cycle == cycles { break }
                    try await cluster.stopImmediately()
                    try await cluster.start()
                }
                progress.stop()
                // A task that never ends is a hang to report, not to wait for: say what each task is doing.
                let watchdog = Task {
                    try await Task.sleep(for: .seconds(60))
                    FileHandle.standardError.write(Data("\(reportPrefix) hung: tasks still running: \(progress.phases)\n".utf8))
                    exit(3)
                }
                try await group.waitForAll()
                watchdog.cancel()
            }
        }
        let (transient, permanent) = progress.errors
        print("\(reportPrefix) cycles=\(cycles) transient=\(transient.sorted()) permanent=\(permanent.sorted())")
    }

    static let bigResult: PostgresQuery = "SELECT g, repeat('x', 200) FROM generate_series(1, 20000) AS g"

    /// Reads a 20,000-row result again and again, pausing every 200 rows as a consumer slower than the socket.
    static func read(_ store: PostgresStore, mode: ReadMode, progress: Progress, task: Int) async {
        while !progress.stopped {
            do {
                progress.enter(task, "query")
                var count = 0
                switch mode {
                case .rowSequence:
                    let rows = try await store.client.query(bigResult, logger: TestEnvironment.logger)
                    for try await (_, text) in rows.decode((Int, String).self) {
                        count += text.isEmpty ? 0 : 1
                        if count % 200 == 0 { progress.add(rows: 200); try await Task.sleep(for: .milliseconds(1)) }
                    }
                case .collectedRows:
                    progress.enter(task, "lease and query")
                    let rows = try await store.client.queryRows(bigResult, logger: TestEnvironment.logger)
                    progress.enter(task, "decode")
                    for row in rows {
                        let (_, text) = try row.decode((Int, String).self)
                        count += text.isEmpty ? 0 : 1
                        if count % 200 == 0 { progress.add(rows: 200); try await Task.sleep(for: .milliseconds(1)) }
                    }
                }
            } catch {
                progress.enter(task, "failed: \(Progress.name(error))")
                progress.record(error)
            }
        }
    }

    /// A worker-like transaction again and again: lock and read rows, update them, read them back.
    static func transact(_ store: PostgresStore, mode: ReadMode, first: Int32, progress: Progress, task: Int) async {
        let members = Array(first..<(first + 200))
        while !progress.stopped {
            do {
                progress.enter(task, "transaction: lease and BEGIN")
                @Sendable func body(_ connection: PostgresConnection) async throws {
                    let locked: PostgresQuery = "SELECT member, points FROM outage_totals WHERE member = ANY(\(members)) ORDER BY member FOR UPDATE"
                    let updated: PostgresQuery = "UPDATE outage_totals SET points = points + 1 WHERE member = ANY(\(members)) RETURNING member, points"
                    for query in [locked, updated] {
                        switch mode {
                        case .rowSequence:
                            for try await _ in try await connection.query(query, logger: TestEnvironment.logger).decode((Int32, Int64).self) {}
                        case .collectedRows:
                            progress.enter(task, "transaction: \(query.sql.prefix(6))")
                            for row in try await connection.queryRows(query, logger: TestEnvironment.logger) { _ = try row.decode((Int32, Int64).self) }
                        }
                    }
                    progress.enter(task, "transaction: COMMIT")
                }
                switch mode {
                case .rowSequence: try await store.client.withTransaction(logger: TestEnvironment.logger) { try await body($0) }
                case .collectedRows: try await store.client.withTransactionRows(logger: TestEnvironment.logger) { try await body($0) }
                }
                progress.enter(task, "transaction: done")
            } catch {
                progress.enter(task, "failed: \(Progress.name(error))")
                progress.record(error)
            }
        }
    }

    /// Rows read since the last wait, the errors seen, and whether to stop.
    final class Progress: Sendable {
        private struct State {
            var rows = 0
            var stopped = false
            var transient: Set<String> = []
            var permanent: Set<String> = []
            var phases: [Int: String] = [:]
        }
        private let state = Mutex(State())

        func add(rows: Int) { state.withLock { $0.rows += rows } }
        /// What each task does now, for the message of a workload that stops making progress.
        func enter(_ task: Int, _ phase: String) { state.withLock { $0.phases[task] = phase } }
        var phases: String { state.withLock { $0.phases.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ") } }
        var stopped: Bool { state.withLock { $0.stopped } }
        func stop() { state.withLock { $0.stopped = true } }
        var errors: (transient: Set<String>, permanent: Set<String>) { state.withLock { ($0.transient, $0.permanent) } }

        func record(_ error: any Error) {
            let name = Self.name(error)
            let transient = PostgresStore.isTransient(error)
            state.withLock { _ = transient ? $0.transient.insert(name) : $0.permanent.insert(name) }
        }

        /// Waits until `atLeast` rows have been read since the last call.
        func waitForRows(atLeast count: Int) async throws {
            state.withLock { $0.rows = 0 }
            while state.withLock({ $0.rows }) < count {
                try await Task.sleep(for: .milliseconds(20))
            }
        }

        /// A short name of an error: its type, and its code or SQLSTATE.
        static func name(_ error: any Error) -> String {
            switch error {
            case let error as PostgresTransactionError:
                return "PostgresTransactionError(\(name(error.beginError ?? error.closureError ?? error.commitError ?? CancellationError())))"
            case let error as PSQLError:
                return "PSQLError(\(error.code)\(error.serverInfo?[.sqlState].map { " \($0)" } ?? ""))"
            default:
                return "\(type(of: error))(\(error))"
            }
        }
    }
}
