import CRdKafka

/// The librdkafka that is actually loaded at run time (which may differ from the headers we compiled against).
public enum KafkaRuntime {
    /// The oldest runtime we accept. Older ones cannot talk to our local broker (Debian bookworm's 2.0.2 fails only
    /// after minutes) and lack DescribeTopics, which topic ids come from.
    public static let minimumVersion = (major: 2, minor: 3)

    /// The runtime's version string, for example `2.16.0`.
    public static var version: String { String(cString: rd_kafka_version_str()) }

    static var versionNumber: Int32 { rd_kafka_version() }

    /// Refuses an old librdkafka with a message that says how to get a current one.
    /// - Throws: ``KafkaError`` with code `runtimeUnsupported`.
    public static func requireSupported() throws {
        let number = versionNumber
        let major = Int((number >> 24) & 0xff)
        let minor = Int((number >> 16) & 0xff)
        if (major, minor) < minimumVersion {
            throw KafkaError(
                code: .runtimeUnsupported,
                reason: "librdkafka \(version) is loaded, but \(minimumVersion.major).\(minimumVersion.minor) or newer "
                    + "is required; run scripts/stack.sh install and make sure LD_LIBRARY_PATH does not point at an "
                    + "older librdkafka")
        }
    }
}
