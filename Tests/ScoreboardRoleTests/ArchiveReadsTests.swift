import ScoreboardHTTP
@testable import ScoreboardPush
import Synchronization
import Testing

/// Archived boards are PostgreSQL aggregations: repeated reads are served from the cache, and at most
/// `concurrentQueries` run at once.
struct ArchiveReadsTests {
    let page = BoardPage(board: "daily:2026-01-01:global", window: .daily, period: "2026-01-01", dimension: .global, value: nil, members: 1, entries: [], source: "archive")

    /// Bad input: the same archived page asked for 100 times. Before, each was a full-board aggregation.
    @Test func repeatedReadsAreServedFromTheCache() async throws {
        let archive = ArchiveReads(limits: .init())
        for _ in 0..<100 { #expect(try await archive.read(board: "b", query: "top|a") { page } == page) }
        #expect(archive.queriesRun == 1)
    }

    /// A late event in a closed period: the feed's update of the board drops its cached answers.
    @Test func anUpdatedBoardIsReadAgain() async throws {
        let archive = ArchiveReads(limits: .init())
        _ = try await archive.read(board: "b", query: "top|a") { page }
        _ = try await archive.read(board: "other", query: "top|a") { page }
        archive.invalidate(boards: ["b"])
        _ = try await archive.read(board: "b", query: "top|a") { page }
        _ = try await archive.read(board: "other", query: "top|a") { page }
        #expect(archive.queriesRun == 3)
    }

    /// Bad input: distinct pages asked for while the maximum number of queries is running: refused with 503
    /// server-busy at once, instead of queueing on the database.
    @Test func readsBeyondTheConcurrencyCapAreRefused() async throws {
        var limits = ArchiveReads.Limits()
        limits.concurrentQueries = 2
        let archive = ArchiveReads(limits: limits)
        let gates = [AsyncStream<Void>.makeStream(), AsyncStream<Void>.makeStream()]
        let started = AsyncStream<Void>.makeStream()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<2 {
                group.addTask {
                    _ = try await archive.read(board: "b", query: "top|\(index)") {
                        started.continuation.yield()
                        for await _ in gates[index].stream { break }
                        return page
                    }
                }
            }
            var iterator = started.stream.makeAsyncIterator()
            _ = await iterator.next()
            _ = await iterator.next()
            await #expect(throws: Problem.self) { _ = try await archive.read(board: "b", query: "top|3") { page } }
            for gate in gates { gate.continuation.finish() }
            try await group.waitForAll()
        }
        #expect(try await archive.read(board: "b", query: "top|3") { page } == page)
    }

    /// Bad input: ten readers of one page that is not cached, with room for one query. Before, the first ran and
    /// the other nine were refused with 503 (ten SSE clients opening one empty board got 503s); now they share it.
    @Test func readersOfAQueryInFlightShareItsAnswer() async throws {
        var limits = ArchiveReads.Limits()
        limits.concurrentQueries = 1
        let archive = ArchiveReads(limits: limits)
        let gate = AsyncStream<Void>.makeStream()
        let started = AsyncStream<Void>.makeStream()
        let answers = try await withThrowingTaskGroup(of: BoardPage?.self) { group in
            group.addTask {
                try await archive.read(board: "b", query: "top|x") {
                    started.continuation.yield()
                    for await _ in gate.stream { break }
                    return page
                }
            }
            var iterator = started.stream.makeAsyncIterator()
            _ = await iterator.next()
            for _ in 0..<9 { group.addTask { try await archive.read(board: "b", query: "top|x") { Issue.record("ran twice"); return nil } } }
            // The joiners are waiting (or will find the answer cached): let the one query finish.
            gate.continuation.finish()
            return try await group.reduce(into: [BoardPage?]()) { $0.append($1) }
        }
        #expect(answers.count == 10 && answers.allSatisfy { $0 == page })
        #expect(archive.queriesRun == 1)
    }

    /// A failing database is a 503 to retry, not a 500.
    @Test func aFailingQueryIsDependencyUnavailable() async throws {
        struct Down: Error {}
        let archive = ArchiveReads(limits: .init())
        do {
            _ = try await archive.read(board: "b", query: "top|x") { throw Down() }
            Issue.record("no error")
        } catch let problem as Problem {
            #expect(problem.kind == .dependencyUnavailable)
            #expect(problem.retryAfter != nil)
        }
    }
}
