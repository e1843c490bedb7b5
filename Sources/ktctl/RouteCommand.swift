import ArgumentParser
import Foundation
import KtWire
import KtctlKit

/// `ktctl route`: flag parsing only; see KtctlKit's RouteInspection.
struct RouteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "route",
        abstract:
            "Show the routing tables, ktctl's routes marked; with --check, what routing some prefixes would collide with.",
        discussion: """
            Lists IPv4 and IPv6 routes of every table like `ip route show table all`. Routes installed by a \
            ktctl session carry protocol 107 ("ktctl") and are marked.

            --check exits with status 2 when a prefix overlaps an existing non-default route (a VPN's, a LAN's, \
            a container bridge's), and explains what routing it would mean. Nothing is ever changed.
            """
    )

    @Option(
        name: .long, help: "Comma-separated prefixes to check, e.g. 10.96.0.0/12,10.244.0.0/16.",
        transform: parsePrefixes)
    var check: [AnyIPPrefix] = []

    @Option(name: .shortAndLong, help: "Output format: text or json.")
    var output: RouteInspection.Format = .text

    func run() throws {
        let (text, status) = try RouteInspection.run(check: check, format: output)
        print(text)
        if status != 0 { throw ExitCode(status) }
    }
}

extension RouteInspection.Format: ExpressibleByArgument {}

/// `--check 10.96.0.0/12,fd00::/108` into prefixes, or an error that names the bad one.
func parsePrefixes(_ text: String) throws -> [AnyIPPrefix] {
    try text.split(separator: ",").map { part in
        do {
            return try AnyIPPrefix.parse(part.trimmingCharacters(in: .whitespaces))
        } catch {
            throw ValidationError("'\(part)' is not a prefix: \(error)")
        }
    }
}
