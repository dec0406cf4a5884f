import Foundation
import ScoreboardCore
import Yams

/// The topics declared in `topics/`, one YAML file each. Code and tests read them; nothing repeats them by hand.
public struct TopicCatalog: Sendable {
    public var topics: [TopicDefinition]

    public init(topics: [TopicDefinition]) {
        self.topics = topics
    }

    /// Reads every `*.yaml` in `directory`, validates each definition and checks names are unique.
    /// - Throws: ``ScoreboardError`` naming the file and what is wrong with it.
    public static func load(directory: URL) throws -> TopicCatalog {
        let files = try FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "yaml" || $0.pathExtension == "yml" }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
        guard !files.isEmpty else {
            throw ScoreboardError(code: .invalidDefinition, reasons: ["\(directory.path): no topic definitions (*.yaml)"])
        }
        var topics: [TopicDefinition] = []
        for file in files {
            let definition: TopicDefinition
            do {
                definition = try YAMLDecoder().decode(TopicDefinition.self, from: try String(contentsOf: file, encoding: .utf8))
            } catch {
                throw ScoreboardError(code: .invalidDefinition, reasons: ["\(file.lastPathComponent): \(error)"])
            }
            try definition.validate()
            topics.append(definition)
        }
        let duplicates = Dictionary(grouping: topics, by: \.name).filter { $0.value.count > 1 }.keys.sorted()
        if !duplicates.isEmpty {
            throw ScoreboardError(code: .invalidDefinition, reasons: duplicates.map { "\($0): declared more than once" })
        }
        return TopicCatalog(topics: topics)
    }

    /// The topic with exactly this name, for example `scoreboard.score-events.v1`.
    public func topic(named name: String) -> TopicDefinition? {
        topics.first { $0.name == name }
    }

    /// The catalog with `namespace` prepended to every topic name (`TopicNames.namespace`: tests and deployments
    /// sharing one cluster).
    public func namespaced(_ namespace: String) -> TopicCatalog {
        TopicCatalog(topics: topics.map { topic in
            var topic = topic
            topic.name = namespace + topic.name
            return topic
        })
    }

    /// The JSON Schema of a topic's values, ready to validate.
    public func valueSchema(of name: String) throws -> JSONSchema? {
        try topic(named: name).map { try JSONSchema($0.valueSchema) }
    }
}

/// Finds the repository's data folders (`topics/`, `pipelines/`) from the working directory or an override.
public enum DefinitionsLocation {
    /// `SCOREBOARD_HOME` if set, else the nearest ancestor of the current directory that has a `topics/` folder.
    public static func root(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        if let home = environment["SCOREBOARD_HOME"], !home.isEmpty { return URL(fileURLWithPath: home) }
        var directory = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
        while directory.path != "/" {
            if FileManager.default.fileExists(atPath: directory.appendingPathComponent("topics").path) { return directory }
            directory.deleteLastPathComponent()
        }
        return URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
    }
}
