import Foundation
import KubeKit

/// Server-side printing (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`): the columns kubectl shows, as
/// the real server's printers make them (`pkg/printers/internalversion`), so that `kubectl get pods -o wide`
/// shows READY, STATUS, IP and NODE.
enum Tables {
    struct Column {
        var name: String
        var type = "string"
        var format = ""
        var priority = 0
        var description = ""
    }

    static func columns(_ resource: ResourceType) -> [Column] {
        let name = Column(name: "Name", format: "name", description: "Name must be unique within a namespace.")
        let age = Column(
            name: "Age",
            description: "CreationTimestamp is a timestamp representing the server time when this object was created.")
        switch resource {
        case Pod.resource:
            return [
                name, Column(name: "Ready"), Column(name: "Status"), Column(name: "Restarts"), age,
                Column(name: "IP", priority: 1), Column(name: "Node", priority: 1),
                Column(name: "Nominated Node", priority: 1),
                Column(name: "Readiness Gates", priority: 1),
            ]
        case Service.resource:
            return [
                name, Column(name: "Type"), Column(name: "Cluster-IP"), Column(name: "External-IP"),
                Column(name: "Port(s)"), age,
                Column(name: "Selector", priority: 1),
            ]
        case Deployment.resource:
            return [
                name, Column(name: "Ready"), Column(name: "Up-to-date", type: "integer"),
                Column(name: "Available", type: "integer"),
                age, Column(name: "Containers", priority: 1), Column(name: "Images", priority: 1),
                Column(name: "Selector", priority: 1),
            ]
        case ReplicaSet.resource:
            return [
                name, Column(name: "Desired", type: "integer"), Column(name: "Current", type: "integer"),
                Column(name: "Ready", type: "integer"), age, Column(name: "Containers", priority: 1),
                Column(name: "Images", priority: 1), Column(name: "Selector", priority: 1),
            ]
        case Namespace.resource:
            return [name, Column(name: "Status"), age]
        case Node.resource:
            return [
                name, Column(name: "Status"), Column(name: "Roles"), age, Column(name: "Version"),
                Column(name: "Internal-IP", priority: 1), Column(name: "External-IP", priority: 1),
            ]
        case ConfigMap.resource:
            return [name, Column(name: "Data", type: "integer"), age]
        case Secret.resource:
            return [name, Column(name: "Type"), Column(name: "Data", type: "integer"), age]
        case Endpoints.resource:
            return [name, Column(name: "Endpoints"), age]
        case Event.resource:
            return [
                Column(name: "Last Seen"), Column(name: "Type"), Column(name: "Reason"), Column(name: "Object"),
                Column(name: "Message"), Column(name: "Source", priority: 1),
                Column(name: "Count", type: "integer", priority: 1), name,
            ]
        case ResourceRegistry.role, ResourceRegistry.clusterRole:
            return [name, Column(name: "Created At", format: "date")]
        case ResourceRegistry.roleBinding, ResourceRegistry.clusterRoleBinding:
            return [
                name, Column(name: "Role"), age, Column(name: "Users", priority: 1),
                Column(name: "Groups", priority: 1), Column(name: "ServiceAccounts", priority: 1),
            ]
        default:
            return [name, age]
        }
    }

    static func cells(_ resource: ResourceType, _ object: JSONValue, now: Date) -> [JSONValue] {
        let name = JSONValue.string(object["metadata"]?["name"]?.stringValue ?? "")
        let age = JSONValue.string(Self.age(object["metadata"]?["creationTimestamp"]?.stringValue, now: now))
        let spec = object["spec"]
        let status = object["status"]
        func text(_ value: JSONValue?, _ fallback: String = "<none>") -> JSONValue {
            .string(value?.stringValue.flatMap { $0.isEmpty ? nil : $0 } ?? fallback)
        }
        func selector(_ labels: JSONValue?) -> JSONValue {
            let pairs = (labels?.objectValue ?? [:]).compactMapValues(\.stringValue).sorted { $0.key < $1.key }
            return .string(pairs.isEmpty ? "<none>" : pairs.map { "\($0.key)=\($0.value)" }.joined(separator: ","))
        }
        func containers(_ template: JSONValue?) -> (JSONValue, JSONValue) {
            let list = template?["spec"]?["containers"]?.arrayValue ?? []
            return (
                .string(list.compactMap { $0["name"]?.stringValue }.joined(separator: ",")),
                .string(list.compactMap { $0["image"]?.stringValue }.joined(separator: ","))
            )
        }
        switch resource {
        case Pod.resource:
            let statuses = status?["containerStatuses"]?.arrayValue ?? []
            let total = spec?["containers"]?.arrayValue?.count ?? 0
            let ready = statuses.filter { $0["ready"]?.boolValue == true }.count
            let restarts = statuses.reduce(Int64(0)) { $0 + ($1["restartCount"]?.intValue ?? 0) }
            var phase = status?["phase"]?.stringValue ?? "Pending"
            if object["metadata"]?["deletionTimestamp"] != nil {
                phase = "Terminating"
            } else if let waiting = statuses.compactMap({ $0["state"]?["waiting"]?["reason"]?.stringValue }).first {
                phase = waiting
            } else if let terminated = statuses.compactMap({ $0["state"]?["terminated"]?["reason"]?.stringValue })
                .first,
                phase != "Running"
            {
                phase = terminated
            } else if phase == "Pending", status?["podIP"] == nil {
                phase = "ContainerCreating"
            }
            return [
                name, .string("\(ready)/\(total)"), .string(phase), .string(String(restarts)), age,
                text(status?["podIP"]),
                text(spec?["nodeName"]), "<none>", "<none>",
            ]
        case Service.resource:
            let ports = (spec?["ports"]?.arrayValue ?? []).map { port in
                "\(port["port"]?.intValue ?? 0)/\(port["protocol"]?.stringValue ?? "TCP")"
            }
            return [
                name, text(spec?["type"], "ClusterIP"), text(spec?["clusterIP"]), "<none>",
                .string(ports.isEmpty ? "<none>" : ports.joined(separator: ",")), age, selector(spec?["selector"]),
            ]
        case Deployment.resource:
            let (names, images) = containers(spec?["template"])
            return [
                name, .string("\(status?["readyReplicas"]?.intValue ?? 0)/\(spec?["replicas"]?.intValue ?? 0)"),
                .int(status?["updatedReplicas"]?.intValue ?? 0), .int(status?["availableReplicas"]?.intValue ?? 0), age,
                names,
                images, selector(spec?["selector"]?["matchLabels"]),
            ]
        case ReplicaSet.resource:
            let (names, images) = containers(spec?["template"])
            return [
                name, .int(spec?["replicas"]?.intValue ?? 0), .int(status?["replicas"]?.intValue ?? 0),
                .int(status?["readyReplicas"]?.intValue ?? 0), age, names, images,
                selector(spec?["selector"]?["matchLabels"]),
            ]
        case Namespace.resource:
            return [name, text(status?["phase"], "Active"), age]
        case Node.resource:
            let ready = (status?["conditions"]?.arrayValue ?? []).contains {
                $0["type"]?.stringValue == "Ready" && $0["status"]?.stringValue == "True"
            }
            let roles = (object["metadata"]?["labels"]?.objectValue ?? [:]).keys
                .filter { $0.hasPrefix("node-role.kubernetes.io/") }.map {
                    String($0.dropFirst("node-role.kubernetes.io/".count))
                }
            let internalIP = (status?["addresses"]?.arrayValue ?? []).first { $0["type"]?.stringValue == "InternalIP" }
            return [
                name, .string(ready ? "Ready" : "NotReady"),
                .string(roles.isEmpty ? "<none>" : roles.sorted().joined(separator: ",")),
                age, text(status?["nodeInfo"]?["kubeletVersion"]), text(internalIP?["address"]), "<none>",
            ]
        case ConfigMap.resource:
            return [
                name,
                .int(
                    Int64((object["data"]?.objectValue?.count ?? 0) + (object["binaryData"]?.objectValue?.count ?? 0))),
                age,
            ]
        case Secret.resource:
            return [name, text(object["type"], "Opaque"), .int(Int64(object["data"]?.objectValue?.count ?? 0)), age]
        case Endpoints.resource:
            let addresses = (object["subsets"]?.arrayValue ?? []).flatMap { subset -> [String] in
                let ips = (subset["addresses"]?.arrayValue ?? []).compactMap { $0["ip"]?.stringValue }
                let ports = (subset["ports"]?.arrayValue ?? []).compactMap { $0["port"]?.intValue }
                return ips.flatMap { ip in ports.map { "\(ip):\($0)" } }
            }
            return [name, .string(addresses.isEmpty ? "<none>" : addresses.joined(separator: ",")), age]
        case Event.resource:
            let involved = object["involvedObject"]
            let kind = (involved?["kind"]?.stringValue ?? "").lowercased()
            return [
                .string(Self.age(object["lastTimestamp"]?.stringValue, now: now)), text(object["type"]),
                text(object["reason"]), .string("\(kind)/\(involved?["name"]?.stringValue ?? "")"),
                text(object["message"], ""),
                text(object["source"]?["component"]), object["count"] ?? 1, name,
            ]
        case ResourceRegistry.role, ResourceRegistry.clusterRole:
            return [name, text(object["metadata"]?["creationTimestamp"])]
        case ResourceRegistry.roleBinding, ResourceRegistry.clusterRoleBinding:
            let subjects = object["subjects"]?.arrayValue ?? []
            func names(_ kind: String) -> JSONValue {
                .string(
                    subjects.filter { $0["kind"]?.stringValue == kind }.map { subject in
                        let name = subject["name"]?.stringValue ?? ""
                        guard kind == "ServiceAccount" else { return name }
                        return "\(subject["namespace"]?.stringValue ?? ""):\(name)"
                    }.joined(separator: ", "))
            }
            let role =
                "\(object["roleRef"]?["kind"]?.stringValue ?? "")/\(object["roleRef"]?["name"]?.stringValue ?? "")"
            return [name, .string(role), age, names("User"), names("Group"), names("ServiceAccount")]
        default:
            return [name, age]
        }
    }

    /// kubectl's `duration.HumanDuration`.
    static func age(_ timestamp: String?, now: Date) -> String {
        guard let timestamp, let created = RFC3339.parse(timestamp) else { return "<unknown>" }
        let seconds = max(0, Int(now.timeIntervalSince(created)))
        switch seconds {
        case ..<120: return "\(seconds)s"
        case ..<600: return seconds % 60 == 0 ? "\(seconds / 60)m" : "\(seconds / 60)m\(seconds % 60)s"
        case ..<10_800: return "\(seconds / 60)m"
        case ..<28_800:
            return (seconds / 60) % 60 == 0 ? "\(seconds / 3600)h" : "\(seconds / 3600)h\((seconds / 60) % 60)m"
        case ..<172_800: return "\(seconds / 3600)h"
        case ..<691_200:
            return (seconds / 3600) % 24 == 0 ? "\(seconds / 86400)d" : "\(seconds / 86400)d\((seconds / 3600) % 24)h"
        case ..<63_072_000: return "\(seconds / 86400)d"
        default: return "\(seconds / 31_536_000)y"
        }
    }

    static func wants(_ request: APIServerRequest) -> Bool {
        (request.header("Accept") ?? "").contains("as=Table")
    }

    /// A Table of `objects`; `includeObject` is `None`, `Metadata` (the default) or `Object`.
    static func table(
        _ resource: ResourceType, _ objects: [JSONValue], resourceVersion: String?, continueToken: JSONValue? = nil,
        includeObject: String?, headers: Bool = true
    ) -> JSONValue {
        let now = Date()
        var metadata: [String: JSONValue] = [:]
        if let resourceVersion { metadata["resourceVersion"] = .string(resourceVersion) }
        if let continueToken { metadata["continue"] = continueToken }
        let rows: [JSONValue] = objects.map { object in
            var row: [String: JSONValue] = ["cells": .array(cells(resource, object, now: now))]
            switch includeObject {
            case "None": break
            case "Object": row["object"] = object
            default:
                var partial: [String: JSONValue] = [:]
                for field in [
                    "name", "namespace", "uid", "resourceVersion", "creationTimestamp", "labels", "annotations",
                    "ownerReferences",
                    "generateName", "deletionTimestamp",
                ] {
                    if let value = object["metadata"]?[field] { partial[field] = value }
                }
                row["object"] = [
                    "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": .object(partial),
                ]
            }
            return .object(row)
        }
        var table: [String: JSONValue] = [
            "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": .object(metadata), "rows": .array(rows),
        ]
        table["columnDefinitions"] =
            headers
            ? .array(
                columns(resource).map { column in
                    [
                        "name": .string(column.name), "type": .string(column.type), "format": .string(column.format),
                        "description": .string(column.description), "priority": .int(Int64(column.priority)),
                    ]
                }) : .array([])
        return .object(table)
    }
}
