/// Splits a migration file into statements.
///
/// PostgresNIO sends every query through the extended protocol, which takes one statement at a time, so a file of
/// several statements is split here: on `;` outside quotes (`'…'`, `"…"`), dollar quotes (`$$…$$`, `$tag$…$tag$`)
/// and comments (`-- …`, `/* … */`).
enum SQLScript {
    static func statements(_ script: String) -> [String] {
        let characters = Array(script)
        var statements: [String] = []
        var current = ""
        var index = 0
        func flush() {
            let statement = current.trimmingWhitespace
            if !statement.isEmpty && !statement.isOnlyComments { statements.append(statement) }
            current = ""
        }
        while index < characters.count {
            let character = characters[index]
            let next: Character? = index + 1 < characters.count ? characters[index + 1] : nil
            switch character {
            case "'", "\"":
                // Quoted text runs to the matching quote; a doubled quote is an escaped one.
                var end = index + 1
                while end < characters.count {
                    if characters[end] == character {
                        if end + 1 < characters.count && characters[end + 1] == character { end += 2; continue }
                        break
                    }
                    end += 1
                }
                current.append(contentsOf: characters[index...min(end, characters.count - 1)])
                index = end + 1
            case "-" where next == "-":
                var end = index
                while end < characters.count && characters[end] != "\n" { end += 1 }
                current.append(contentsOf: characters[index..<end])
                index = end
            case "/" where next == "*":
                var end = index + 2
                while end + 1 < characters.count && !(characters[end] == "*" && characters[end + 1] == "/") { end += 1 }
                end = min(end + 2, characters.count)
                current.append(contentsOf: characters[index..<end])
                index = end
            case "$":
                // A dollar-quote tag is $$ or $identifier$; anything else (a parameter like $1) is plain text.
                var tagEnd = index + 1
                while tagEnd < characters.count && (characters[tagEnd].isLetter || characters[tagEnd] == "_" || (tagEnd > index + 1 && characters[tagEnd].isNumber)) {
                    tagEnd += 1
                }
                if tagEnd < characters.count && characters[tagEnd] == "$" {
                    let tag = characters[index...tagEnd]
                    var search = tagEnd + 1
                    var closing: Int?
                    while search + tag.count <= characters.count {
                        if characters[search..<(search + tag.count)].elementsEqual(tag) { closing = search; break }
                        search += 1
                    }
                    let end = closing.map { $0 + tag.count } ?? characters.count
                    current.append(contentsOf: characters[index..<end])
                    index = end
                } else {
                    current.append(character)
                    index += 1
                }
            case ";":
                flush()
                index += 1
            default:
                current.append(character)
                index += 1
            }
        }
        flush()
        return statements
    }
}

extension String {
    fileprivate var trimmingWhitespace: String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
              let last = scalars.lastIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        return String(scalars[first...last])
    }

    /// Whether every line is a `--` comment (what is left after the last `;` of a file, typically).
    fileprivate var isOnlyComments: Bool {
        split(separator: "\n").allSatisfy { $0.trimmingCharacters(in: .whitespaces).hasPrefix("--") || $0.trimmingCharacters(in: .whitespaces).isEmpty }
    }
}
