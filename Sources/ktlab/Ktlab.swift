import ArgumentParser
import Foundation
import LabKit
import Logging

/// `ktlab`: flags only; the work is in LabKit.
@main
struct Ktlab: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ktlab",
        abstract: "An embedded one-machine Kubernetes for trying ktctl and for its tests.",
        subcommands: [
            Up.self, Down.self, Status.self, KubeconfigPath.self, Workstation.self, Image.self, Serve.self,
        ])

    struct Up: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a lab and return when its API answers.")
        @Option(help: "The lab's name (namespaces are <name>-node, <name>-ws, <name>-pod-N).") var name = "ktlab"
        @Option(name: .customLong("pod-cidr"), help: "The cluster's pod range.") var podCIDR = "10.244.0.0/16"
        @Option(name: .customLong("service-cidr"), help: "The ClusterIP range.") var serviceCIDR = "10.96.0.0/12"

        func run() async throws {
            // `serve` runs from the same binary, by absolute path (`up` may have been found through PATH).
            let me = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
            do {
                let layout = try await LabControl.up(
                    name: name, podCIDR: podCIDR, serviceCIDR: serviceCIDR,
                    serveCommand: [me, "serve", "--name", name], progress: { print("ktlab: \($0)") })
                print(
                    """
                    ktlab \(name) is up.
                      kubectl on this machine:   export KUBECONFIG=\(layout.hostKubeconfig)
                      the workstation namespace: ktlab ws --name \(name) -- kubectl get pods
                      stop it:                   ktlab down --name \(name)
                    """)
            } catch {
                throw ValidationError("\(error)")
            }
        }
    }

    struct Down: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a lab and everything it made.")
        @Option(help: "The lab's name.") var name = "ktlab"

        func run() throws {
            if let reason = LabControl.preflight(), geteuid() != 0 { throw ValidationError(reason) }
            do {
                try LabControl.down(name: name, progress: { print("ktlab: \($0)") })
            } catch {
                throw ValidationError("\(error)")
            }
            print("ktlab \(name) is down.")
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the labs that are up.")
        func run() { print(LabControl.status()) }
    }

    struct KubeconfigPath: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "kubeconfig",
            abstract: "Print the path of a kubeconfig: the administrator's, or a restricted user's.",
            discussion: """
                With --user NAME, makes NAME a user of the lab (a random bearer token, kept in \
                /run/ktlab/<lab>/users.json), or reuses the token NAME has, and writes a kubeconfig for it. Such a \
                user is in the group system:authenticated only: it may do nothing but discovery until a Role or \
                ClusterRole is bound to it (kubectl create rolebinding ... --user NAME).
                """)
        @Option(help: "The lab's name.") var name = "ktlab"
        @Option(help: "A restricted user (lower-case letters, digits, '-' and '.').") var user: String?
        @Flag(help: "For the workstation namespace (the node's link address) rather than this machine.")
        var workstation = false

        func run() throws {
            guard let user else {
                guard let state = LabState.read(name) else {
                    throw ValidationError("lab \"\(name)\" is not up (ktlab up --name \(name))")
                }
                print(workstation ? state.layout.workstationKubeconfig : state.layout.hostKubeconfig)
                return
            }
            do {
                print(try LabUsers.kubeconfig(lab: name, user: user, workstation: workstation))
            } catch {
                throw ValidationError("\(error)")
            }
        }
    }

    struct Workstation: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ws", abstract: "Run a command in the lab's workstation namespace, with KUBECONFIG set.")
        @Option(help: "The lab's name.") var name = "ktlab"
        @Argument(parsing: .captureForPassthrough, help: "The command (after --).") var command: [String] = []

        func run() throws {
            guard let state = LabState.read(name) else {
                throw ValidationError("lab \"\(name)\" is not up (ktlab up --name \(name))")
            }
            let arguments = command.first == "--" ? Array(command.dropFirst()) : command
            guard !arguments.isEmpty else {
                throw ValidationError("give a command after --, e.g. ktlab ws -- kubectl get pods")
            }
            setenv("KUBECONFIG", state.layout.workstationKubeconfig, 1)
            let argv = ["ip", "netns", "exec", state.layout.workstationNamespace] + arguments
            let ip = Host.findExecutable("ip") ?? "/usr/sbin/ip"
            var cArguments = argv.map { strdup($0) } + [nil]
            execv(ip, &cArguments)
            throw ValidationError("cannot run ip netns exec: errno \(errno)")
        }
    }

    struct Image: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The lab's local images, which its pods run under crun.",
            discussion: """
                A pod whose image is a local image runs under crun (an OCI runtime) with the pod's user, \
                read-only root, capabilities and volumes; other images run from ktlab's catalog as processes. A lab \
                looks in the images loaded into it, then KTLAB_IMAGES (colon-separated directories), then \
                .build/images beside ktlab's directory (make images).
                """,
            subcommands: [Load.self, List.self])

        struct Load: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Load an OCI image archive (make images, skopeo copy ... oci-archive:FILE) into a lab.")
            @Option(help: "The lab's name.") var name = "ktlab"
            @Argument(help: "The archive.") var file: String

            func run() throws {
                do {
                    for image in try LabImages.load(archive: file, lab: name) {
                        print("loaded \(image.reference.familiar) \(image.digest) into lab \(name)")
                    }
                } catch {
                    throw ValidationError("\(error)")
                }
            }
        }

        struct List: ParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List the images a lab runs under crun.")
            @Option(help: "The lab's name.") var name = "ktlab"

            func run() throws {
                let me = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
                do {
                    print(LabImages.table(try LabImages.list(lab: name, binaries: me.path)))
                } catch {
                    throw ValidationError("\(error)")
                }
            }
        }
    }

    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a lab's server (started by `ktlab up`; not for direct use).", shouldDisplay: false)
        @Option(help: "The lab's name.") var name = "ktlab"
        @Flag(name: [.customShort("d"), .long], help: "Log every request.") var debug = false

        func run() async throws {
            var logger = Logger(label: "ktlab")
            logger.logLevel = debug ? .debug : .info
            try await LabServer.run(name: name, logger: logger)
        }
    }
}
