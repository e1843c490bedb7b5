import KubeKit

/// Discovery documents (`/api`, `/apis`, `/api/v1`, `/apis/<g>/<v>`, `/version`) in the legacy form every client
/// reads. (The aggregated form kubectl 1.33 prefers is optional for it; it falls back to these.)
enum Discovery {
    static func versions(serverAddress: String) -> JSONValue {
        [
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [["clientCIDR": "0.0.0.0/0", "serverAddress": .string(serverAddress)]],
        ]
    }

    static func groups() -> JSONValue {
        let groups = ResourceRegistry.groupVersions.filter { !$0.group.isEmpty }.map { entry -> JSONValue in
            let groupVersion: JSONValue = [
                "groupVersion": .string("\(entry.group)/\(entry.version)"), "version": .string(entry.version),
            ]
            return ["name": .string(entry.group), "versions": [groupVersion], "preferredVersion": groupVersion]
        }
        return ["kind": "APIGroupList", "apiVersion": "v1", "groups": .array(groups)]
    }

    static func resources(group: String, version: String) -> JSONValue? {
        let served = ResourceRegistry.all.filter { $0.type.group == group && $0.type.version == version }
        guard !served.isEmpty else { return nil }
        var list: [JSONValue] = []
        for resource in served {
            var entry: [String: JSONValue] = [
                "name": .string(resource.type.plural), "singularName": .string(resource.singular),
                "namespaced": .bool(resource.type.namespaced), "kind": .string(resource.type.kind),
                "verbs": .array(resource.verbs.map { .string($0) }),
            ]
            if !resource.shortNames.isEmpty { entry["shortNames"] = .array(resource.shortNames.map { .string($0) }) }
            if !resource.categories.isEmpty { entry["categories"] = .array(resource.categories.map { .string($0) }) }
            list.append(.object(entry))
            for (subresource, verbs) in resource.subresources.sorted(by: { $0.key < $1.key }) {
                var sub: [String: JSONValue] = [
                    "name": .string("\(resource.type.plural)/\(subresource)"), "singularName": "",
                    "namespaced": .bool(resource.type.namespaced), "verbs": .array(verbs.map { .string($0) }),
                ]
                switch subresource {
                case "scale":
                    sub["group"] = "autoscaling"
                    sub["version"] = "v1"
                    sub["kind"] = "Scale"
                case "exec": sub["kind"] = "PodExecOptions"
                case "portforward": sub["kind"] = "PodPortForwardOptions"
                case "log": sub["kind"] = "Pod"
                default: sub["kind"] = .string(resource.type.kind)
                }
                list.append(.object(sub))
            }
        }
        let groupVersion = group.isEmpty ? version : "\(group)/\(version)"
        return [
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": .string(groupVersion),
            "resources": .array(list),
        ]
    }

    static let version: JSONValue = [
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-ktlab", "gitCommit": "ktlab", "gitTreeState": "clean",
        "buildDate": "2026-11-22T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64",
    ]
}
