// swift-tools-version:6.1
//
// Benchmarks live in their own package so that their dependencies stay out of the main build; they use the
// main package's libraries by path. Figures are printed as tables; timings never gate `make test`.

import PackageDescription

let package = Package(
    name: "ktconnect-bench",
    dependencies: [
        .package(name: "ktconnect", path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssh.git", from: "0.15.1"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    ],
    targets: [
        .executableTarget(
            name: "kt-bench",
            dependencies: [
                .product(name: "KtWire", package: "ktconnect"),
                .product(name: "KtTun", package: "ktconnect"),
                .product(name: "KtStack", package: "ktconnect"),
                .product(name: "KtTunnel", package: "ktconnect"),
                .product(name: "ShadowKit", package: "ktconnect"),
                .product(name: "NIOSSH", package: "swift-nio-ssh"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NamespaceTestSupport", package: "ktconnect"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        )
    ]
)
