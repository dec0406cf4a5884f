// swift-tools-version:6.1
import PackageDescription

// librdkafka: headers come from Debian's librdkafka-dev, the library from the current runtime that
// `scripts/stack.sh install` prepares in .local/rdkafka/lib: Debian bookworm's 2.0.2 cannot talk to our broker and
// lacks DescribeTopics. Linking there (ahead of the system's library directories) and recording it as RUNPATH means a
// plain `swift build` uses it.
let rdkafkaRuntime = Context.packageDirectory + "/.local/rdkafka/lib"
let rdkafkaLinkerSettings: [LinkerSetting] = [
    .unsafeFlags(["-L" + rdkafkaRuntime, "-Xlinker", "-rpath", "-Xlinker", rdkafkaRuntime]),
]

let package = Package(
    name: "scoreboard",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "scoreboard", targets: ["scoreboard"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.0"..<"5.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.25.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "5.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.6.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.2.0"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.1.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.65.0"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.1.0"),
        // The load generator's latency histograms (HDR: fixed relative error at every magnitude).
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.1.0"),
        // zlib for gzip of large JSON answers (push): already resolved, as hummingbird-websocket's own dependency.
        .package(url: "https://github.com/adam-fowler/compress-nio.git", from: "1.5.0"),
    ],
    targets: [
        // MARK: Domain core: pure, standard library only.
        .target(name: "ScoreboardCore"),

        // MARK: C libraries.
        // No `pkgConfig:` here on purpose: SwiftPM would put the .pc file's `-L/usr/lib/x86_64-linux-gnu` ahead of
        // our runtime's folder, and the linker would then take Debian's 2.0.2 (whose SONAME is the same, so the
        // newer library is ignored). The module map links `rdkafka`; the headers are in /usr/include.
        .systemLibrary(
            name: "CRdKafka",
            providers: [.apt(["librdkafka-dev"])]
        ),
        .systemLibrary(
            name: "CHiredis",
            pkgConfig: "hiredis",
            providers: [.apt(["libhiredis-dev"])]
        ),

        // MARK: Adapters, named for what they wrap.
        .target(
            name: "ScoreboardKafka",
            dependencies: [
                "CRdKafka",
                "ScoreboardCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            linkerSettings: rdkafkaLinkerSettings
        ),
        .target(
            name: "ScoreboardRedis",
            dependencies: [
                "CHiredis",
                "ScoreboardCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "ScoreboardPostgres",
            dependencies: [
                "ScoreboardCore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                // For ConnectionPoolError, which PostgresClient throws but PostgresNIO does not re-export.
                .product(name: "_ConnectionPoolModule", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            resources: [.copy("Migrations")]
        ),
        // Reads topics/ and pipelines/ (YAML) into Core's types.
        .target(
            name: "ScoreboardDefinitions",
            dependencies: [
                "ScoreboardCore",
                .product(name: "Yams", package: "Yams"),
            ]
        ),

        // MARK: Roles, one module each, composed in the one executable.
        // What the three HTTP roles share: problem+json errors, JWT authentication, health and /metrics.
        .target(
            name: "ScoreboardHTTP",
            dependencies: [
                "ScoreboardCore",
                "ScoreboardRedis",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // The gateway reaches Redis and Kafka through its ports (GatewayPorts.swift), which the executable wires to
        // the adapters.
        .target(
            name: "ScoreboardGateway",
            dependencies: [
                "ScoreboardCore",
                "ScoreboardHTTP",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The worker reads its batches from Kafka itself; everything else it reaches through its ports
        // (WorkerPorts.swift), which the executable wires to the PostgreSQL, Redis and Kafka adapters.
        .target(
            name: "ScoreboardWorker",
            dependencies: [
                "ScoreboardCore",
                "ScoreboardHTTP",
                "ScoreboardKafka",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The push gateway reaches Redis, PostgreSQL and Kafka only through its ports (PushPorts.swift), which the
        // executable wires to the adapters.
        .target(
            name: "ScoreboardPush",
            dependencies: [
                "ScoreboardCore",
                "ScoreboardHTTP",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "Logging", package: "swift-log"),
                // WebSocketFrame: an update's text frame carries the bytes shared by every subscriber.
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "CompressNIO", package: "compress-nio"),
            ],
            // The live dashboard's static files (index.html, dashboard.js, dashboard.css), served at /dashboard.
            resources: [.copy("Dashboard")]
        ),

        // The bare librdkafka loops the Kafka benchmark measures the Swift module against.
        .target(name: "CKafkaBaseline", dependencies: ["CRdKafka"], linkerSettings: rdkafkaLinkerSettings),

        // MARK: Commands, and the one executable.
        .target(
            name: "ScoreboardLoadgen",
            dependencies: [
                "ScoreboardCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),
        .target(
            name: "ScoreboardCLI",
            dependencies: [
                "ScoreboardCore",
                "ScoreboardDefinitions",
                "ScoreboardKafka",
                "ScoreboardRedis",
                "ScoreboardPostgres",
                "CKafkaBaseline",
                "ScoreboardHTTP",
                "ScoreboardGateway",
                "ScoreboardWorker",
                "ScoreboardPush",
                "ScoreboardLoadgen",
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "scoreboard",
            dependencies: ["ScoreboardCLI", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            linkerSettings: rdkafkaLinkerSettings
        ),

        // MARK: Tests.
        .testTarget(name: "ScoreboardCoreTests", dependencies: ["ScoreboardCore", "ScoreboardDefinitions"]),
        .testTarget(name: "ScoreboardLoadgenTests", dependencies: ["ScoreboardLoadgen", .product(name: "NIOCore", package: "swift-nio")]),
        .testTarget(
            name: "ScoreboardRoleTests",
            dependencies: [
                "ScoreboardCore", "ScoreboardDefinitions", "ScoreboardHTTP", "ScoreboardGateway", "ScoreboardPush", "ScoreboardWorker", "ScoreboardKafka",
                "ScoreboardRedis", "ScoreboardPostgres",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "CompressNIO", package: "compress-nio"),
            ],
            linkerSettings: rdkafkaLinkerSettings
        ),
        .testTarget(
            name: "ScoreboardAdapterTests",
            dependencies: ["ScoreboardCLI", "ScoreboardPostgres", "ScoreboardRedis", .product(name: "Yams", package: "Yams")],
            linkerSettings: rdkafkaLinkerSettings
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "ScoreboardCore",
                "ScoreboardDefinitions",
                "ScoreboardKafka",
                "ScoreboardRedis",
                "ScoreboardPostgres",
                "ScoreboardCLI",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                "ScoreboardHTTP",
                "ScoreboardGateway",
                "ScoreboardWorker",
            ],
            linkerSettings: rdkafkaLinkerSettings
        ),
    ]
)
