import ScoreboardCore

/// One board's members in memory, in Redis's order (highest score first, ties by member descending, as `ZREVRANGE`
/// orders them), with order statistics: a member's place, the rank of a score, a page and a neighbourhood each cost
/// O(log n) (plus the entries returned), and so does setting a member's score.
///
/// Ranks are competition ranks, as ``RedisBoardReads`` answers them: one more than the number of strictly higher
/// scores. Member order compares `String`s, which for the ASCII identifiers the edge admits is Redis's byte order.
struct BoardRanking: Sendable {
    private var scores: [String: Int64] = [:]
    private var tree = OrderStatisticTree()

    init() {}

    /// A board read from Redis: `members` already in Redis's order (as a `ZREVRANGE` returns them), built in O(n).
    init(ordered members: [(userID: String, score: Int64)]) {
        scores.reserveCapacity(members.count)
        for member in members { scores[member.userID] = member.score }
        if scores.count == members.count {
            tree = OrderStatisticTree(ordered: members)
        } else {
            // A member listed twice (not what Redis answers): insert one by one, the last score wins.
            for (member, score) in scores { tree.insert(score: score, member: member) }
        }
    }

    var count: Int { scores.count }

    func score(of member: String) -> Int64? { scores[member] }

    /// Sets `member`'s score, adding it if new (what a worker's `ZADD` does).
    mutating func set(_ member: String, score: Int64) {
        if let old = scores.updateValue(score, forKey: member) {
            guard old != score else { return }
            tree.remove(score: old, member: member)
        }
        tree.insert(score: score, member: member)
    }

    /// Takes `member` off the board (what a worker's `ZREM` of a banned user does): everyone below moves up one place.
    mutating func remove(_ member: String) {
        guard let old = scores.removeValue(forKey: member) else { return }
        tree.remove(score: old, member: member)
    }

    /// One member's published change: a new total, or a removal.
    mutating func apply(_ change: BoardChanges.Member) {
        if change.isRemoved {
            remove(change.userID)
        } else {
            set(change.userID, score: change.total)
        }
    }

    /// The competition rank of `score`: one more than the number of strictly higher scores.
    func rank(of score: Int64) -> Int { tree.countHigher(than: score) + 1 }

    /// Up to `limit` members from place `offset` (0-based), ranked.
    func slice(from offset: Int, count limit: Int) -> BoardSlice {
        BoardSlice(members: count, entries: ranked(tree.elements(from: offset, count: limit), position: offset))
    }

    /// The members within `radius` places of `member`; `nil` when it is not on the board.
    func neighbourhood(of member: String, radius: Int) -> BoardSlice? {
        guard let score = scores[member] else { return nil }
        let position = tree.position(score: score, member: member)
        let start = max(0, position - radius)
        return BoardSlice(members: count, entries: ranked(tree.elements(from: start, count: position - start + radius + 1), position: start))
    }

    func placement(of member: String) -> LivePlacement? {
        scores[member].map { LivePlacement(score: $0, rank: rank(of: $0), members: count) }
    }

    /// Competition ranks of a contiguous run of the board starting at `position`, as ``RedisBoardReads`` computes them.
    private func ranked(_ run: [(member: String, score: Int64)], position: Int) -> [RankedMember] {
        guard let first = run.first else { return [] }
        let ranks = CompetitionRanking.ranks(forDescending: run.map(\.score), firstPosition: position, firstRank: rank(of: first.score))
        return zip(run, ranks).map { RankedMember(rank: $1, userID: $0.member, score: $0.score) }
    }
}

/// A treap of (score, member) keys in Redis's order, each node counting its subtree, so that positions are found by
/// descending once. Nodes live in one array and refer to each other by index (no reference counting per node); freed
/// slots are reused.
struct OrderStatisticTree: Sendable {
    struct Node: Sendable {
        var score: Int64
        var member: String
        var left: Int32 = -1
        var right: Int32 = -1
        var size: Int32 = 1
        var priority: UInt32
    }

    private var nodes: [Node] = []
    private var freeSlots: [Int32] = []
    private var root: Int32 = -1
    /// SplitMix64 state for the priorities: any sequence keeps the tree's expected depth logarithmic.
    private var seed: UInt64 = 0x9E37_79B9_7F4A_7C15

    init() {}

    /// A tree of keys already in order, built as a Cartesian tree in O(n).
    init(ordered keys: [(userID: String, score: Int64)]) {
        nodes.reserveCapacity(keys.count)
        var spine: [Int32] = []
        for (index, key) in keys.enumerated() {
            let node = Int32(index)
            nodes.append(Node(score: key.score, member: key.userID, priority: nextPriority()))
            var last: Int32 = -1
            while let top = spine.last, nodes[Int(top)].priority < nodes[index].priority { last = spine.removeLast() }
            nodes[index].left = last
            if let top = spine.last { nodes[Int(top)].right = node }
            spine.append(node)
        }
        root = spine.first ?? -1
        _ = fixSizes(root)
    }

    var count: Int { Int(size(root)) }

    /// Whether key a comes before key b: the higher score, or on a tie the greater member (Redis's `ZREVRANGE`).
    @inline(__always)
    static func precedes(_ scoreA: Int64, _ memberA: String, _ scoreB: Int64, _ memberB: String) -> Bool {
        scoreA != scoreB ? scoreA > scoreB : memberA > memberB
    }

    mutating func insert(score: Int64, member: String) {
        let node: Int32
        let fresh = Node(score: score, member: member, priority: nextPriority())
        if let slot = freeSlots.popLast() {
            node = slot
            nodes[Int(slot)] = fresh
        } else {
            node = Int32(nodes.count)
            nodes.append(fresh)
        }
        root = insert(node, into: root)
    }

    mutating func remove(score: Int64, member: String) {
        root = remove(score: score, member: member, from: root)
    }

    /// How many keys have a score strictly higher than `score`.
    func countHigher(than score: Int64) -> Int {
        var count: Int32 = 0
        var at = root
        while at >= 0 {
            let node = nodes[Int(at)]
            if node.score > score {
                count += size(node.left) + 1
                at = node.right
            } else {
                at = node.left
            }
        }
        return Int(count)
    }

    /// The 0-based place of a key that is in the tree (how many keys precede it).
    func position(score: Int64, member: String) -> Int {
        var count: Int32 = 0
        var at = root
        while at >= 0 {
            let node = nodes[Int(at)]
            if Self.precedes(node.score, node.member, score, member) {
                count += size(node.left) + 1
                at = node.right
            } else if node.score == score && node.member == member {
                return Int(count + size(node.left))
            } else {
                at = node.left
            }
        }
        return Int(count)
    }

    /// Up to `limit` keys in order from place `offset`: one descent, then an in-order walk.
    func elements(from offset: Int, count limit: Int) -> [(member: String, score: Int64)] {
        guard offset >= 0, offset < count, limit > 0 else { return [] }
        var result: [(member: String, score: Int64)] = []
        result.reserveCapacity(min(limit, count - offset))
        // The path to place `offset`, keeping the nodes whose key comes after it (where the walk went left).
        var pending: [Int32] = []
        var at = root
        var index = Int32(offset)
        while at >= 0 {
            let leftSize = size(nodes[Int(at)].left)
            if index < leftSize {
                pending.append(at)
                at = nodes[Int(at)].left
            } else if index == leftSize {
                pending.append(at)
                break
            } else {
                index -= leftSize + 1
                at = nodes[Int(at)].right
            }
        }
        while result.count < limit, let next = pending.popLast() {
            result.append((nodes[Int(next)].member, nodes[Int(next)].score))
            var child = nodes[Int(next)].right
            while child >= 0 {
                pending.append(child)
                child = nodes[Int(child)].left
            }
        }
        return result
    }

    // MARK: - Treap operations (recursive: the expected depth is O(log n))

    @inline(__always)
    private func size(_ node: Int32) -> Int32 { node < 0 ? 0 : nodes[Int(node)].size }

    @inline(__always)
    private mutating func update(_ node: Int32) {
        nodes[Int(node)].size = size(nodes[Int(node)].left) + size(nodes[Int(node)].right) + 1
    }

    private mutating func fixSizes(_ node: Int32) -> Int32 {
        guard node >= 0 else { return 0 }
        let size = fixSizes(nodes[Int(node)].left) + fixSizes(nodes[Int(node)].right) + 1
        nodes[Int(node)].size = size
        return size
    }

    private mutating func nextPriority() -> UInt32 {
        seed &+= 0x9E37_79B9_7F4A_7C15
        var z = seed
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return UInt32(truncatingIfNeeded: z ^ (z >> 31))
    }

    /// Splits `tree` into the keys that precede (score, member) and the others.
    private mutating func split(_ tree: Int32, score: Int64, member: String) -> (Int32, Int32) {
        guard tree >= 0 else { return (-1, -1) }
        if Self.precedes(nodes[Int(tree)].score, nodes[Int(tree)].member, score, member) {
            let (left, right) = split(nodes[Int(tree)].right, score: score, member: member)
            nodes[Int(tree)].right = left
            update(tree)
            return (tree, right)
        } else {
            let (left, right) = split(nodes[Int(tree)].left, score: score, member: member)
            nodes[Int(tree)].left = right
            update(tree)
            return (left, tree)
        }
    }

    /// Joins two trees where every key of `first` precedes every key of `second`.
    private mutating func merge(_ first: Int32, _ second: Int32) -> Int32 {
        if first < 0 { return second }
        if second < 0 { return first }
        if nodes[Int(first)].priority > nodes[Int(second)].priority {
            nodes[Int(first)].right = merge(nodes[Int(first)].right, second)
            update(first)
            return first
        } else {
            nodes[Int(second)].left = merge(first, nodes[Int(second)].left)
            update(second)
            return second
        }
    }

    private mutating func insert(_ node: Int32, into tree: Int32) -> Int32 {
        guard tree >= 0 else { return node }
        let key = nodes[Int(node)]
        if key.priority > nodes[Int(tree)].priority {
            let (left, right) = split(tree, score: key.score, member: key.member)
            nodes[Int(node)].left = left
            nodes[Int(node)].right = right
            update(node)
            return node
        }
        if Self.precedes(key.score, key.member, nodes[Int(tree)].score, nodes[Int(tree)].member) {
            nodes[Int(tree)].left = insert(node, into: nodes[Int(tree)].left)
        } else {
            nodes[Int(tree)].right = insert(node, into: nodes[Int(tree)].right)
        }
        update(tree)
        return tree
    }

    private mutating func remove(score: Int64, member: String, from tree: Int32) -> Int32 {
        guard tree >= 0 else { return -1 }
        let node = nodes[Int(tree)]
        if node.score == score && node.member == member {
            freeSlots.append(tree)
            nodes[Int(tree)].member = ""  // let the slot drop its string
            return merge(node.left, node.right)
        }
        if Self.precedes(score, member, node.score, node.member) {
            nodes[Int(tree)].left = remove(score: score, member: member, from: node.left)
        } else {
            nodes[Int(tree)].right = remove(score: score, member: member, from: node.right)
        }
        update(tree)
        return tree
    }
}
