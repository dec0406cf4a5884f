import Foundation
import Logging
import ScoreboardCore
import ScoreboardDefinitions
@testable import ScoreboardKafka
@testable import ScoreboardWorker
import Testing

/// The achievement stage in the worker, in process against the memory ports: progress and unlocks commit with their
/// batch, a replayed batch or a crash between commit and outputs unlocks nothing twice and loses nothing, and ranking
/// achievements come from the board writes' ranks.
@Suite struct AchievementStageTests {
    static let catalog = RepositoryAchievements.catalog
    static let topic = WorkerInProcessTests.topic
    /// 24 November 2025, 12:00 UTC.
    static let noon = Timestamp(millisecondsSinceEpoch: 1_763_985_600_000)
    static let day: Int64 = 86_400_000

    /// A worker on the harness's ports, announcing its unlocks to `notifications` when given.
    static func worker(on harness: WorkerInProcessTests.Harness, notifications: MemoryAchievementNotifications? = nil) -> ScoreWorker {
        var configuration = ScoreWorker.Configuration(
            consumer: KafkaConsumerConfiguration(client: KafkaClientConfiguration(bootstrapServers: ["unused:1"]), groupID: "g"),
            topics: TopicNames())
        configuration.retry = RetryBackoff(initial: .milliseconds(1), maximum: .milliseconds(2))
        configuration.achievements = catalog
        return ScoreWorker(
            configuration: configuration, catalog: WorkerInProcessTests.pipelines.leaderboards, actions: WorkerInProcessTests.pipelines.actions,
            ports: WorkerPorts(
                ledger: harness.ledger, boards: harness.boards, outputs: harness.outputs, topics: harness.topics, notifications: notifications),
            logger: Logger(label: "test"))
    }

    static func claim(_ worker: ScoreWorker) async throws {
        _ = try await worker.assign([KafkaTopicPartition(topic: topic, partition: 0)], topic: topic)
    }

    /// Events of `user` (`count` of `action`, at `time`), as partition 0's messages from `offset`.
    static func batch(_ user: String, _ action: String = "complete-quest", count: Int, at time: Timestamp = noon, from offset: Int64 = 0) throws -> KafkaConsumerBatch {
        let encoder = JSONEncoder()
        return KafkaConsumerBatch(messages: try (0..<count).map { index in
            let event = ScoreEvent(
                eventID: UUID().uuidString.lowercased(), userID: user, action: action, points: 1, occurredAt: time, region: "eu", guild: nil,
                idempotencyKey: UUID().uuidString.lowercased(), source: .gameServer)
            return KafkaConsumerMessage(
                topic: topic, partition: 0, offset: offset + Int64(index), key: ArraySlice(user.utf8), value: ArraySlice(try encoder.encode(event)),
                timestampMilliseconds: nil)
        })
    }

    static func progress(_ user: String, in ledger: MemoryWorkerLedger) throws -> PlayerProgress? {
        try ledger.snapshot.stageState[AchievementRows.progressKey(userID: user)].map { try JSONDecoder().decode(PlayerProgress.self, from: Data($0)) }
    }

    static func unlocks(in ledger: MemoryWorkerLedger) -> [String: Timestamp] {
        ledger.snapshot.records.filter { $0.key.stage == AchievementRows.stage }.reduce(into: [:]) { $0[$1.key.key] = $1.value.occurredAt }
    }

    /// Ten quests (100 points) unlock beginner, in the batch's transaction, and ranks inside the top 10 of the two
    /// watched boards unlock the ranking achievements after the board write. The same batch delivered again (a worker
    /// that restarted before it stored its offsets) advances nothing and unlocks nothing: its events are dropped.
    @Test func unlocksCommitWithTheBatchAndAReplayedBatchChangesNothing() async throws {
        let harness = WorkerInProcessTests.Harness()
        let worker = Self.worker(on: harness)
        try await Self.claim(worker)
        let batch = try Self.batch("ann", count: 10)
        await worker.applyUntilDone(batch, topic: Self.topic)
        #expect(Set(Self.unlocks(in: harness.ledger).keys) == ["ann:beginner", "ann:daily-top-10", "ann:all-time-top-10"])
        let progress = try #require(try Self.progress("ann", in: harness.ledger))
        #expect(progress.totalPoints == 100 && progress.actionCounts == ["complete-quest": 10] && progress.currentStreak == 1)
        #expect(progress.recentDays.map(\.actions) == [10])
        let before = harness.ledger.snapshot

        // Bad input: the same messages again, to this worker and to the partition's next owner.
        await worker.applyUntilDone(batch, topic: Self.topic)
        let next = Self.worker(on: harness)
        try await Self.claim(next)
        await next.applyUntilDone(batch, topic: Self.topic)
        let after = harness.ledger.snapshot
        #expect(after.stageState == before.stageState)
        #expect(after.records == before.records)
    }

    /// The fault: the worker stops right after its batch commits, before its outputs. The event unlocks committed with
    /// the batch; the ranking unlocks, which only the board write can reveal, come when the next owner projects the
    /// outbox at its claim; the stopped worker's late projection is fenced. One record per unlock throughout, none lost.
    @Test func aCrashBetweenCommitAndOutputsLosesNoUnlockAndDoublesNone() async throws {
        let harness = WorkerInProcessTests.Harness()
        let stopped = Self.worker(on: harness)
        try await Self.claim(stopped)
        // Now, not a past day: a recovering owner re-raises only boards whose Redis key has not expired.
        let batch = try Self.batch("bob", "pvp-win", count: 3, at: Timestamp.now())
        let committed = try #require(try await stopped.commit(stopped.decode(batch, topic: Self.topic), topic: Self.topic))
        #expect(Set(Self.unlocks(in: harness.ledger).keys) == ["bob:beginner"])

        let next = Self.worker(on: harness)
        try await Self.claim(next)
        let unlocked = Self.unlocks(in: harness.ledger)
        #expect(Set(unlocked.keys) == ["bob:beginner", "bob:daily-top-10", "bob:all-time-top-10"])
        #expect(try await stopped.project(committed, topic: Self.topic) == false)
        // The batch replayed to the new owner (the stopped worker's offsets were stored, but a consumer may still
        // deliver it again): nothing changes, the first unlock times stay.
        await next.applyUntilDone(batch, topic: Self.topic)
        #expect(Self.unlocks(in: harness.ledger) == unlocked)
        #expect(try Self.progress("bob", in: harness.ledger)?.totalPoints == 120)
    }

    /// A projection that runs again (its outbox rows not yet cleared when the worker stopped) sees the same ranks:
    /// the ranking unlocks keep their first time, and a member outside the watched top N unlocks nothing.
    @Test func rankingUnlocksAreWrittenOnceByIdAndOnlyInsideTheTop() async throws {
        let harness = WorkerInProcessTests.Harness()
        let boards = RankAchievementBoards(base: harness.boards, engine: AchievementEngine(catalog: Self.catalog), ledger: harness.ledger)
        let daily = BoardKey(window: .daily, period: LeaderboardWindow.daily.period(containing: Self.noon).key, dimension: .global, value: nil)
        let regional = BoardKey(window: .allTime, period: "all", dimension: .region, value: "eu")
        // Twelve members: "m11" at the top, "m0" twelfth; the regional board is watched by no achievement.
        let scores = Dictionary(uniqueKeysWithValues: (0..<12).map { ("m\($0)", Int64(10 * ($0 + 1))) })
        _ = try await boards.raiseScores([daily: scores, regional: scores])
        let first = Self.unlocks(in: harness.ledger)
        #expect(Set(first.keys) == Set((2..<12).map { "m\($0):daily-top-10" }))
        // Again, later, from a process that remembers nothing (the next owner): the same ids, the first times kept.
        let again = RankAchievementBoards(base: harness.boards, engine: AchievementEngine(catalog: Self.catalog), ledger: harness.ledger)
        try await again.appendRankUnlocks(try await harness.boards.raiseScores([daily: scores]), at: Timestamp(millisecondsSinceEpoch: Self.noon.millisecondsSinceEpoch + Self.day))
        #expect(Self.unlocks(in: harness.ledger) == first)
    }

    /// Streaks over UTC days through the worker: three batches a UTC day apart (the second one minute after midnight,
    /// the first one minute before) make a 3-day streak and unlock `regular` once; a missed day restarts the streak and
    /// keeps the longest.
    @Test func streaksAcrossUTCDayBoundariesUnlockOnce() async throws {
        let harness = WorkerInProcessTests.Harness()
        let worker = Self.worker(on: harness)
        try await Self.claim(worker)
        let midnight = Self.noon.millisecondsSinceEpoch + Self.day / 2
        let times = [midnight - 60_000, midnight + 60_000, midnight + Self.day + 60_000, midnight + 3 * Self.day]
        for (index, time) in times.enumerated() {
            await worker.applyUntilDone(try Self.batch("cy", count: 1, at: Timestamp(millisecondsSinceEpoch: time), from: Int64(index)), topic: Self.topic)
            if index == 2 {
                #expect(Self.unlocks(in: harness.ledger)["cy:regular"] == Timestamp(millisecondsSinceEpoch: time))
            }
        }
        let progress = try #require(try Self.progress("cy", in: harness.ledger))
        #expect(progress.currentStreak == 1 && progress.longestStreak == 3)
        #expect(Self.unlocks(in: harness.ledger).keys.filter { $0.hasSuffix(":regular") }.count == 1)
    }

    /// Every unlock is announced after its batch commits, once: the event unlocks from the batch's outputs, the
    /// ranking unlocks from the board write. Nothing is announced before the commit, and the outbox is cleared after.
    @Test func unlocksAreAnnouncedOnceAfterTheCommit() async throws {
        let harness = WorkerInProcessTests.Harness()
        let notifications = MemoryAchievementNotifications()
        let worker = Self.worker(on: harness, notifications: notifications)
        try await Self.claim(worker)
        let batch = try Self.batch("eve", count: 10, at: Timestamp.now())
        let committed = try #require(try await worker.commit(worker.decode(batch, topic: Self.topic), topic: Self.topic))
        #expect(notifications.published.isEmpty, "nothing is announced before the outputs")
        #expect(try await worker.project(committed, topic: Self.topic))
        let announced = notifications.published.map { AchievementNotification($0).id }
        #expect(announced.sorted() == ["eve:all-time-top-10", "eve:beginner", "eve:daily-top-10"])
        #expect(Set(announced) == Set(Self.unlocks(in: harness.ledger).keys))
        #expect(harness.ledger.snapshot.outbox.isEmpty)
        // Bad input: the batch again. Its events are dropped: no unlock, no announcement.
        await worker.applyUntilDone(batch, topic: Self.topic)
        #expect(notifications.published.count == 3)
    }

    /// The fault: the worker stops between the commit and the outputs (as under SIGKILL). The batch's unlock is stored
    /// once and announced by the partition's next owner, from the outbox, at its claim; the stopped worker's late
    /// outputs are fenced and announce nothing. The replayed batch announces nothing more.
    @Test func aCrashBetweenCommitAndOutputsAnnouncesTheUnlockOnRecovery() async throws {
        let harness = WorkerInProcessTests.Harness()
        let notifications = MemoryAchievementNotifications()
        let stopped = Self.worker(on: harness, notifications: notifications)
        try await Self.claim(stopped)
        let batch = try Self.batch("fay", "pvp-win", count: 3, at: Timestamp.now())
        let committed = try #require(try await stopped.commit(stopped.decode(batch, topic: Self.topic), topic: Self.topic))
        #expect(notifications.published.isEmpty)
        #expect(harness.ledger.snapshot.outbox.contains { $0.entry.stage == AchievementRows.stage }, "the unlock waits in the outbox")

        let next = Self.worker(on: harness, notifications: notifications)
        try await Self.claim(next)
        let announced = notifications.published.map { AchievementNotification($0).id }
        #expect(announced.filter { $0 == "fay:beginner" }.count == 1, "the stored unlock, announced from the outbox")
        #expect(Set(announced) == ["fay:beginner", "fay:daily-top-10", "fay:all-time-top-10"])
        #expect(try await stopped.project(committed, topic: Self.topic) == false)
        await next.applyUntilDone(batch, topic: Self.topic)
        #expect(notifications.published.count == announced.count, "the fenced projection and the replay announce nothing")
        #expect(Set(Self.unlocks(in: harness.ledger).keys) == Set(announced), "each unlock stored once")
        #expect(harness.ledger.snapshot.outbox.isEmpty)
    }

    /// The fault: the notifications topic does not acknowledge. The outputs are retried until it does: every unlock,
    /// the ranking ones too, is announced in the end, and stored once.
    @Test func anAnnouncementThatFailsIsRetried() async throws {
        let harness = WorkerInProcessTests.Harness()
        let notifications = MemoryAchievementNotifications()
        let worker = Self.worker(on: harness, notifications: notifications)
        try await Self.claim(worker)
        notifications.failNextPublishes(2, with: KafkaError(code: .messageDelivery, reason: "Message timed out"))
        await worker.applyUntilDone(try Self.batch("gus", count: 10, at: Timestamp.now()), topic: Self.topic)
        #expect(Set(notifications.published.map { AchievementNotification($0).id }) == ["gus:beginner", "gus:daily-top-10", "gus:all-time-top-10"])
        #expect(notifications.published.count == 3, "a publish that failed sent nothing")
        #expect(Self.unlocks(in: harness.ledger).count == 3)
        #expect(harness.ledger.snapshot.outbox.isEmpty)
    }

    /// Bad input: a top-10 member's rank seen again by a restarted worker (a process that remembers nothing), as after
    /// every deploy. The ranking unlock was stored and announced: nothing is announced again (before the announcement
    /// marks, each restart announced it once more). The fault: a worker that stored a ranking unlock and stopped
    /// before announcing it; the next one to see the rank announces it, once.
    @Test func aRestartedWorkerDoesNotAnnounceAnOldRankingUnlockAgain() async throws {
        let harness = WorkerInProcessTests.Harness()
        let notifications = MemoryAchievementNotifications()
        func boards() -> RankAchievementBoards {
            RankAchievementBoards(
                base: harness.boards, engine: AchievementEngine(catalog: Self.catalog), ledger: harness.ledger, notifications: notifications)
        }
        let daily = BoardKey(window: .daily, period: LeaderboardWindow.daily.period(containing: Timestamp.now()).key, dimension: .global, value: nil)
        _ = try await boards().raiseScores([daily: ["ann": 10]])
        #expect(notifications.published.map { AchievementNotification($0).id } == ["ann:daily-top-10"])

        _ = try await boards().raiseScores([daily: ["ann": 20]])
        #expect(notifications.published.count == 1, "announced once, across restarts")

        // Stored by a worker that stopped before its announcement: the record without its mark.
        let stored = try #require(AchievementEngine(catalog: Self.catalog).rankUnlocks(userID: "bo", rank: 2, board: "daily:global", at: Self.noon).first)
        try await harness.ledger.appendStageRecords([
            StageRecord(key: stored.recordKey, userID: "bo", occurredAt: Self.noon, payload: Array(try JSONEncoder().encode(stored))),
        ])
        _ = try await boards().raiseScores([daily: ["bo": 15]])
        _ = try await boards().raiseScores([daily: ["bo": 16]])
        #expect(notifications.published.map { AchievementNotification($0).id } == ["ann:daily-top-10", "bo:daily-top-10"])
        #expect(Self.unlocks(in: harness.ledger)["bo:daily-top-10"] == Self.noon, "the first unlock time kept")
    }

    /// Without an achievement catalog the worker has no achievement stage and writes none of its rows.
    @Test func noCatalogNoStage() async throws {
        let harness = WorkerInProcessTests.Harness()
        try await harness.claim()
        await harness.worker.applyUntilDone(try Self.batch("dee", count: 10), topic: Self.topic)
        #expect(harness.ledger.snapshot.stageState.isEmpty && harness.ledger.snapshot.records.isEmpty)
    }
}
