// swift-tools-version:6.1
//
// The map of this package is docs/DESIGN.md §7: one concern per target, arrows one way
// (bytes → values → state machines → I/O), executables only parse flags.

import Foundation
import PackageDescription

/// Fuzzers build only when asked (`make fuzz` sets KT_FUZZ=1): their `main` hands control to libFuzzer's
/// `LLVMFuzzerRunDriver`, which exists only when linking with `-sanitize=fuzzer`.
let fuzzing = ProcessInfo.processInfo.environment["KT_FUZZ"] == "1"

/// One fuzzer per parser; each lives in `Fuzz/<name>/` and drives one KtWire entry point.
let fuzzers = [
    "FuzzIPv4", "FuzzIPv6", "FuzzTCP", "FuzzUDP", "FuzzICMP", "FuzzDNS", "FuzzAddressText", "FuzzStack", "FuzzTunnel",
    "FuzzKube", "FuzzProxy", "FuzzFlags", "FuzzImage",
]

var targets: [Target] = [
    // Bytes ↔ values: every packet format the engine needs. Imports NIOCore only.
    .target(
        name: "KtWire",
        dependencies: [.product(name: "NIOCore", package: "swift-nio")]
    ),
    // A userspace TCP/UDP/ICMP stack: no clock, no randomness, no I/O; time and entropy are injected.
    .target(
        name: "KtStack",
        dependencies: ["KtWire", .product(name: "NIOCore", package: "swift-nio")]
    ),
    .testTarget(
        name: "KtStackTests",
        dependencies: [
            "KtStack", "KtWire", "KtTun", "NamespaceTestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "PropertyBased", package: "swift-property-based"),
        ]
    ),
    // libnl from Debian, through pkg-config; only CNetlink's C code includes it.
    .systemLibrary(
        name: "CLibNL",
        pkgConfig: "libnl-route-3.0",
        providers: [.apt(["libnl-3-dev", "libnl-route-3-dev"])]
    ),
    // The C shim over libnl and /dev/net/tun: plain C types and cnl_ functions, nothing else talks to the kernel
    // about links and routes.
    .target(name: "CNetlink", dependencies: ["CLibNL"], path: "CNetlink"),
    // The TUN device, netlink wrappers and batched I/O; GSO/GRO offload handling over KtWire.
    .target(
        name: "KtTun",
        dependencies: [
            "CNetlink", "KtWire",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        ]
    ),
    // Throwaway network namespaces and the commands run in them, for every test that touches the kernel.
    .target(name: "NamespaceTestSupport", path: "Tests/NamespaceTestSupport"),
    // Servers and byte patterns shared by the tunnel and engine tests.
    .target(
        name: "TunnelTestSupport",
        dependencies: [
            "KtWire",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        ],
        path: "Tests/TunnelTestSupport"
    ),
    .testTarget(
        name: "KtTunTests",
        dependencies: [
            "KtTun", "KtWire", "NamespaceTestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "PropertyBased", package: "swift-property-based"),
        ]
    ),
    // SSH between ktctl and kt-shadow: keys, the dial and datagram protocols, the client, and channel plumbing.
    .target(
        name: "KtTunnel",
        dependencies: [
            "KtWire",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOSSH", package: "swift-nio-ssh"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log"),
        ]
    ),
    // The agent in the shadow pod: an SSH server that dials, listens and relays for ktctl.
    .target(
        name: "ShadowKit",
        dependencies: [
            "KtTunnel", "KtWire",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOSSH", package: "swift-nio-ssh"),
            .product(name: "Logging", package: "swift-log"),
        ]
    ),
    .executableTarget(
        name: "kt-shadow",
        dependencies: [
            "ShadowKit", "KtTunnel",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSH", package: "swift-nio-ssh"),
        ]
    ),
    .testTarget(
        name: "KtTunnelTests",
        dependencies: [
            "KtTunnel", "ShadowKit", "KtWire", "NamespaceTestSupport", "TunnelTestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSH", package: "swift-nio-ssh"),
            .product(name: "Logging", package: "swift-log"),
        ]
    ),
    // A Kubernetes client: kubeconfig as kubectl reads it, typed models, REST and watch over AsyncHTTPClient,
    // patches, and port-forward over WebSocket as a byte stream for KtTunnel.
    .target(
        name: "KubeKit",
        dependencies: [
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Yams", package: "Yams"),
        ]
    ),
    // ktlab: the embedded one-machine Kubernetes (API server, controllers, pods in network namespaces).
    .target(
        name: "LabKit",
        dependencies: [
            "KubeKit", "KtWire",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Logging", package: "swift-log"),
        ]
    ),
    .executableTarget(
        name: "ktlab",
        dependencies: [
            "LabKit", "KubeKit",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]
    ),
    // A lab made with the real `ktlab` binary for one test (ktlab's and ktctl's end-to-end tests).
    .target(
        name: "LabTestSupport",
        dependencies: ["KubeKit", "LabKit", "NamespaceTestSupport"],
        path: "Tests/LabTestSupport"
    ),
    // ktlab end to end: the built `ktlab` binary, real namespaces, kubectl and the Python client where installed.
    .testTarget(
        name: "KtlabTests",
        dependencies: [
            "KubeKit", "LabKit", "NamespaceTestSupport", "LabTestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]
    ),
    .testTarget(
        name: "LabKitTests",
        dependencies: ["LabKit", "KubeKit"]
    ),
    .testTarget(
        name: "KubeKitTests",
        dependencies: [
            "KubeKit", "LabKit", "NamespaceTestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Logging", package: "swift-log"),
        ],
        exclude: ["Fixtures"]
    ),
    // ktctl mesh's router: HTTP/1.1 and HTTP/2 routed by header to developers' shadows; routes from the sessions'
    // Leases (the route table is a pure value).
    .target(
        name: "RouterKit",
        dependencies: [
            "KubeKit",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOHTTP2", package: "swift-nio-http2"),
            .product(name: "NIOHPACK", package: "swift-nio-http2"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]
    ),
    .executableTarget(
        name: "kt-router",
        dependencies: [
            "RouterKit",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]
    ),
    .testTarget(
        name: "RouterKitTests",
        dependencies: [
            "RouterKit", "KubeKit",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOHTTP2", package: "swift-nio-http2"),
            .product(name: "Logging", package: "swift-log"),
        ]
    ),
    // The laptop's side of the data path: TUN ↔ stack ↔ tunnel on one thread, the DNS resolver, the SOCKS/HTTP proxy.
    .target(
        name: "KtEngine",
        dependencies: [
            "KtStack", "KtTun", "KtTunnel", "KtWire",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]
    ),
    // The engine's logic without root: the in-memory device and an in-process kt-shadow on loopback.
    .testTarget(
        name: "KtEngineTests",
        dependencies: [
            "KtEngine", "KtStack", "KtTun", "KtTunnel", "KtWire", "ShadowKit", "TunnelTestSupport",
            "NamespaceTestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSH", package: "swift-nio-ssh"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]
    ),
    // One file per command: a pure plan (tested as values) and the step that applies it.
    .target(
        name: "KtctlKit",
        dependencies: [
            "KtTun", "KtWire", "KtEngine", "KtTunnel", "KtStack", "KubeKit", "RouterKit",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]
    ),
    .testTarget(
        name: "KtctlKitTests",
        dependencies: [
            "KtctlKit", "KtTun", "KtWire", "KtEngine", "KtTunnel", "ShadowKit", "KubeKit", "LabKit",
            "NamespaceTestSupport", "LabTestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]
    ),
    // The CLI: flag parsing only.
    .executableTarget(
        name: "ktctl",
        dependencies: [
            "KtctlKit", "KtWire",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]
    ),
    .testTarget(
        name: "KtWireTests",
        dependencies: [
            "KtWire", "NamespaceTestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "PropertyBased", package: "swift-property-based"),
        ],
        exclude: ["capture-fixtures.sh"]
    ),
]

if fuzzing {
    targets.append(.target(name: "CFuzzerDriver", path: "Fuzz/CFuzzerDriver"))
    targets += fuzzers.map { name in
        .executableTarget(
            name: name,
            dependencies: ["KtWire", "KtStack", "CFuzzerDriver", .product(name: "NIOCore", package: "swift-nio")]
                + (name == "FuzzTunnel" ? ["KtTunnel", "ShadowKit"] : [])
                + (name == "FuzzKube" ? ["KubeKit"] : [])
                + (name == "FuzzProxy" ? ["KtEngine"] : [])
                + (name == "FuzzFlags" ? ["KtctlKit", "KubeKit", "RouterKit"] : [])
                + (name == "FuzzImage" ? ["LabKit", "KubeKit"] : []),
            path: "Fuzz/\(name)"
        )
    }
}

let package = Package(
    name: "ktconnect",
    products: [
        .library(name: "KtWire", targets: ["KtWire"]),
        .library(name: "KtTun", targets: ["KtTun"]),
        .library(name: "KtStack", targets: ["KtStack"]),
        .library(name: "KtTunnel", targets: ["KtTunnel"]),
        .library(name: "ShadowKit", targets: ["ShadowKit"]),
        .library(name: "KubeKit", targets: ["KubeKit"]),
        .executable(name: "kt-shadow", targets: ["kt-shadow"]),
        .executable(name: "kt-router", targets: ["kt-router"]),
        // Throwaway network namespaces, for the tests and for bench/ (which runs its tools in them).
        .library(name: "NamespaceTestSupport", targets: ["NamespaceTestSupport"]),
        .executable(name: "ktctl", targets: ["ktctl"]),
        .executable(name: "ktlab", targets: ["ktlab"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-nio-ssh.git", from: "0.15.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
    ],
    targets: targets
)
