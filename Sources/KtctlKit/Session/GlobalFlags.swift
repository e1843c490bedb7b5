/// kt-connect takes its global flags before the subcommand (`ktctl -n dev -d exchange tomcat --expose 8080`); ktctl's
/// commands take them after it. `reorder` moves the known ones found before the subcommand to just after it, so that
/// both orders work; anything else before the subcommand is left where it is (and refused by the parser, as before).
public enum GlobalFlags {
    /// Flags that take a value (`-n dev`, `--namespace dev`, `--namespace=dev`).
    public static let withValue: Set<String> = [
        "-n", "--namespace", "-c", "--kubeconfig", "--context", "-i", "--image", "--image-pull-secret",
        "--imagePullSecret", "--service-account", "--serviceAccount", "--node-selector", "--nodeSelector", "-l",
        "--with-label", "--withLabel", "--with-annotation", "--withAnnotation", "--pod-quota", "--podQuota",
        "--timeout",
    ]
    /// Flags without a value.
    public static let switches: Set<String> = ["-d", "--debug", "--force-update"]

    /// `arguments` (without the program's name) with the global flags before the first of `subcommands` moved after
    /// it.
    public static func reorder(_ arguments: [String], subcommands: Set<String>) -> [String] {
        var moved: [String] = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            if subcommands.contains(argument) {
                return [argument] + moved + arguments[(index + 1)...]
            }
            let name = argument.split(separator: "=", maxSplits: 1).first.map(String.init) ?? argument
            if switches.contains(argument) {
                moved.append(argument)
                index += 1
            } else if withValue.contains(name), argument.contains("=") {
                moved.append(argument)
                index += 1
            } else if withValue.contains(argument), index + 1 < arguments.count {
                moved += [argument, arguments[index + 1]]
                index += 2
            } else {
                // Not a global flag: nothing before the subcommand is moved.
                return arguments
            }
        }
        return arguments
    }
}
