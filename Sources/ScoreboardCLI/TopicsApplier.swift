import ScoreboardCore
import ScoreboardDefinitions
import ScoreboardKafka

/// Makes the broker hold the topics `topics/` declares: creates the missing ones and reports drift, never "fixing"
/// it (see ``TopicReconciliation``).
public struct TopicsApplier: Sendable {
    public struct Outcome: Sendable, Hashable {
        public var topic: String
        public var result: Result
        /// Whether the broker told us the topic's configs (a broker without DescribeConfigs cannot be checked).
        public var configsChecked: Bool

        public enum Result: Sendable, Hashable {
            case created, upToDate, drift([String])
        }
    }

    let admin: KafkaAdminClient

    public init(admin: KafkaAdminClient) {
        self.admin = admin
    }

    public func apply(_ catalog: TopicCatalog) async throws -> [Outcome] {
        let names = catalog.topics.map(\.name)
        let described = try await admin.describeTopics(names)
        var outcomes: [Outcome] = []
        var toCreate: [TopicDefinition] = []
        for definition in catalog.topics {
            guard let description = described[definition.name] else {
                toCreate.append(definition)
                continue
            }
            let configs = try? await admin.describeConfigs(topic: definition.name)
            let observed = ObservedTopic(partitions: description.partitionCount, configs: configs ?? nil)
            switch TopicReconciliation.compare(definition, with: observed) {
            case .create, .upToDate:
                outcomes.append(Outcome(topic: definition.name, result: .upToDate, configsChecked: observed.configs != nil))
            case .drift(let differences):
                outcomes.append(Outcome(topic: definition.name, result: .drift(differences), configsChecked: observed.configs != nil))
            }
        }
        if !toCreate.isEmpty {
            let created = try await admin.createTopics(toCreate.map {
                KafkaNewTopic(name: $0.name, partitions: $0.partitions, replicationFactor: $0.replicationFactor, configs: $0.configs)
            })
            for definition in toCreate {
                // Another `topics apply` may have created it between our describe and create: that is fine.
                let result: Outcome.Result = created[definition.name] == .created ? .created : .upToDate
                outcomes.append(Outcome(topic: definition.name, result: result, configsChecked: false))
            }
        }
        return outcomes.sorted { $0.topic < $1.topic }
    }
}
