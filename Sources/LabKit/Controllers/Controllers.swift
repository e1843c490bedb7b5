import Foundation
import KubeKit
import Logging

/// The lab's controller manager: Deployments make ReplicaSets (one per pod template, named by its hash), ReplicaSets
/// make and remove Pods, and every Service with a selector gets Endpoints and an EndpointSlice of its ready pods.
/// Each change to a watched kind makes one reconcile pass over everything (a one-node lab is small); passes write
/// only what differs, so they converge.
public final class Controllers: Sendable {
    let handler: APIHandler
    let logger: Logger
    var store: ObjectStore { handler.store }

    public init(handler: APIHandler, logger: Logger) {
        self.handler = handler
        self.logger = logger
    }

    /// Reconciles after every change until cancelled.
    public func run() async throws {
        let kinds = [Deployment.resource, ReplicaSet.resource, Pod.resource, Service.resource]
        let (signals, signal) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        var watchers: [Task<Void, Never>] = []
        for kind in kinds {
            let events = try store.watch(Selection(resource: kind, namespace: nil), after: Int64(store.revision))
            watchers.append(Task { for await _ in events { signal.yield() } })
        }
        defer { for watcher in watchers { watcher.cancel() } }
        signal.yield()
        for await _ in signals {
            if Task.isCancelled { break }
            // Let a burst of changes (kubectl apply, a scale) settle into one pass.
            try? await Task.sleep(for: .milliseconds(20))
            reconcile()
        }
    }

    func reconcile() {
        for deployment in store.list(Selection(resource: Deployment.resource, namespace: nil)).items {
            do { try reconcileDeployment(deployment) } catch { logger.warning("deployment: \(error)") }
        }
        for replicaSet in store.list(Selection(resource: ReplicaSet.resource, namespace: nil)).items {
            do { try reconcileReplicaSet(replicaSet) } catch { logger.warning("replicaset: \(error)") }
        }
        for deployment in store.list(Selection(resource: Deployment.resource, namespace: nil)).items {
            do { try deploymentStatus(deployment) } catch { logger.warning("deployment status: \(error)") }
        }
        do { try reconcileEndpoints() } catch { logger.warning("endpoints: \(error)") }
    }

    // MARK: - Helpers

    static func name(_ object: JSONValue) -> String { object["metadata"]?["name"]?.stringValue ?? "" }
    static func namespace(_ object: JSONValue) -> String { object["metadata"]?["namespace"]?.stringValue ?? "" }
    static func uid(_ object: JSONValue) -> String { object["metadata"]?["uid"]?.stringValue ?? "" }
    static func labels(_ object: JSONValue?) -> [String: String] {
        (object?["metadata"]?["labels"]?.objectValue ?? [:]).compactMapValues(\.stringValue)
    }

    static func owned(by owner: JSONValue, _ objects: [JSONValue]) -> [JSONValue] {
        let uid = uid(owner)
        return objects.filter { object in
            (object["metadata"]?["ownerReferences"]?.arrayValue ?? []).contains { $0["uid"]?.stringValue == uid }
        }
    }

    static func ownerReference(_ owner: JSONValue, kind: String, apiVersion: String) -> JSONValue {
        [
            "apiVersion": .string(apiVersion), "kind": .string(kind), "name": .string(name(owner)),
            "uid": .string(uid(owner)), "controller": true, "blockOwnerDeletion": true,
        ]
    }

    /// The pod-template-hash: FNV-1a of the template's JSON, written with the alphabet Kubernetes uses for it.
    static func templateHash(_ template: JSONValue) -> String {
        var hash: UInt32 = 2_166_136_261
        for byte in Array(template.jsonText.utf8) {
            hash ^= UInt32(byte)
            hash = hash &* 16_777_619
        }
        let alphabet = Array("bcdfghjklmnpqrstvwxz2456789")
        var text = ""
        var value = hash
        repeat {
            text.append(alphabet[Int(value % UInt32(alphabet.count))])
            value /= UInt32(alphabet.count)
        } while value > 0
        return text
    }

    static func isReady(_ pod: JSONValue) -> Bool {
        (pod["status"]?["conditions"]?.arrayValue ?? []).contains {
            $0["type"]?.stringValue == "Ready" && $0["status"]?.stringValue == "True"
        }
    }

    /// A condition list where a condition keeps its transition time while its status stays the same.
    static func conditions(_ wanted: [(type: String, status: String, reason: String, message: String)], old: JSONValue?)
        -> JSONValue
    {
        let now = RFC3339.format(Date())
        let previous = old?.arrayValue ?? []
        return .array(
            wanted.map { condition in
                let before = previous.first { $0["type"]?.stringValue == condition.type }
                let since =
                    before?["status"]?.stringValue == condition.status
                    ? (before?["lastTransitionTime"] ?? .string(now)) : .string(now)
                let updated =
                    before?["status"]?.stringValue == condition.status
                        && before?["reason"]?.stringValue == condition.reason
                    ? (before?["lastUpdateTime"] ?? .string(now)) : .string(now)
                return [
                    "type": .string(condition.type), "status": .string(condition.status),
                    "reason": .string(condition.reason), "message": .string(condition.message),
                    "lastTransitionTime": since, "lastUpdateTime": updated,
                ]
            })
    }

    // MARK: - Deployments

    func reconcileDeployment(_ deployment: JSONValue) throws {
        let namespace = Self.namespace(deployment)
        guard let template = deployment["spec"]?["template"] else { return }
        let hash = Self.templateHash(template)
        let replicas = deployment["spec"]?["replicas"]?.intValue ?? 1
        let all = store.list(Selection(resource: ReplicaSet.resource, namespace: namespace)).items
        let owned = Self.owned(by: deployment, all)
        let newName = "\(Self.name(deployment))-\(hash)"
        let revision =
            (owned.compactMap {
                Int($0["metadata"]?["annotations"]?["deployment.kubernetes.io/revision"]?.stringValue ?? "")
            }.max() ?? 0)
        if let current = owned.first(where: { Self.name($0) == newName }) {
            if current["spec"]?["replicas"]?.intValue != replicas {
                try store.modify(ReplicaSet.resource, namespace: namespace, name: newName) {
                    $0["spec"]?["replicas"] = .int(replicas)
                }
            }
        } else {
            var labels = Self.labels(template).mapValues { JSONValue.string($0) }
            labels["pod-template-hash"] = .string(hash)
            var podTemplate = template
            // The template's metadata as written (annotations too: kubectl rollout restart's, ktlab's own), with the
            // hash label added.
            var metadata = template["metadata"]?.objectValue ?? [:]
            metadata["labels"] = .object(labels)
            podTemplate["metadata"] = .object(metadata)
            var selector = deployment["spec"]?["selector"] ?? [:]
            var matchLabels = selector["matchLabels"]?.objectValue ?? [:]
            matchLabels["pod-template-hash"] = .string(hash)
            selector["matchLabels"] = .object(matchLabels)
            let replicaSet: JSONValue = [
                "metadata": [
                    "name": .string(newName), "labels": .object(labels),
                    "annotations": [
                        "deployment.kubernetes.io/revision": .string(String(revision + 1)),
                        "deployment.kubernetes.io/desired-replicas": .string(String(replicas)),
                    ],
                    "ownerReferences": [Self.ownerReference(deployment, kind: "Deployment", apiVersion: "apps/v1")],
                ],
                "spec": ["replicas": .int(replicas), "selector": selector, "template": podTemplate],
            ]
            _ = try store.create(
                ReplicaSet.resource, namespace: namespace,
                object: try handler.admission.defaulted(ReplicaSet.resource, replicaSet))
            logger.info("deployment \(namespace)/\(Self.name(deployment)): replicaset \(newName)")
            try store.modify(Deployment.resource, namespace: namespace, name: Self.name(deployment)) { object in
                var annotations = object["metadata"]?["annotations"]?.objectValue ?? [:]
                annotations["deployment.kubernetes.io/revision"] = .string(String(revision + 1))
                object["metadata"]?["annotations"] = .object(annotations)
            }
        }
        // Older templates scale to zero (the lab's rollout: replace at once).
        for old in owned where Self.name(old) != newName && (old["spec"]?["replicas"]?.intValue ?? 0) != 0 {
            try store.modify(ReplicaSet.resource, namespace: namespace, name: Self.name(old)) {
                $0["spec"]?["replicas"] = 0
            }
        }
    }

    func deploymentStatus(_ deployment: JSONValue) throws {
        let namespace = Self.namespace(deployment)
        let name = Self.name(deployment)
        let hash = deployment["spec"]?["template"].map(Self.templateHash) ?? ""
        let owned = Self.owned(
            by: deployment, store.list(Selection(resource: ReplicaSet.resource, namespace: namespace)).items)
        func sum(_ field: String) -> Int64 { owned.reduce(0) { $0 + ($1["status"]?[field]?.intValue ?? 0) } }
        let updated = owned.first { Self.name($0) == "\(name)-\(hash)" }?["status"]?["replicas"]?.intValue ?? 0
        let wanted = deployment["spec"]?["replicas"]?.intValue ?? 1
        let available = sum("availableReplicas")
        var status: JSONValue = [
            "observedGeneration": deployment["metadata"]?["generation"] ?? 1, "replicas": .int(sum("replicas")),
            "updatedReplicas": .int(updated), "readyReplicas": .int(sum("readyReplicas")),
            "availableReplicas": .int(available),
        ]
        if sum("replicas") - available > 0 { status["unavailableReplicas"] = .int(sum("replicas") - available) }
        status["conditions"] = Self.conditions(
            [
                available >= wanted
                    ? ("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
                    : (
                        "Available", "False", "MinimumReplicasUnavailable",
                        "Deployment does not have minimum availability."
                    ),
                updated >= wanted && available >= wanted
                    ? (
                        "Progressing", "True", "NewReplicaSetAvailable",
                        "ReplicaSet \"\(name)-\(hash)\" has successfully progressed."
                    )
                    : ("Progressing", "True", "ReplicaSetUpdated", "ReplicaSet \"\(name)-\(hash)\" is progressing."),
            ], old: deployment["status"]?["conditions"])
        try setStatus(Deployment.resource, deployment, status)
    }

    /// Writes `status` when it differs from the stored one.
    func setStatus(_ resource: ResourceType, _ object: JSONValue, _ status: JSONValue) throws {
        guard object["status"] != status else { return }
        try store.modify(resource, namespace: Self.namespace(object), name: Self.name(object)) { $0["status"] = status }
    }

    // MARK: - ReplicaSets

    func reconcileReplicaSet(_ replicaSet: JSONValue) throws {
        let namespace = Self.namespace(replicaSet)
        let wanted = Int(replicaSet["spec"]?["replicas"]?.intValue ?? 1)
        let pods = Self.owned(by: replicaSet, store.list(Selection(resource: Pod.resource, namespace: namespace)).items)
            .filter { pod in
                !["Succeeded", "Failed"].contains(pod["status"]?["phase"]?.stringValue ?? "")
                    && pod["metadata"]?["deletionTimestamp"] == nil
            }
        if pods.count < wanted, let template = replicaSet["spec"]?["template"] {
            for _ in pods.count..<wanted {
                var metadata = template["metadata"] ?? [:]
                metadata["generateName"] = .string("\(Self.name(replicaSet))-")
                metadata["ownerReferences"] = [
                    Self.ownerReference(replicaSet, kind: "ReplicaSet", apiVersion: "apps/v1")
                ]
                let pod: JSONValue = ["metadata": metadata, "spec": template["spec"] ?? [:]]
                let created = try store.create(
                    Pod.resource, namespace: namespace, object: try handler.admission.defaulted(Pod.resource, pod))
                logger.info("replicaset \(namespace)/\(Self.name(replicaSet)): pod \(Self.name(created))")
            }
        } else if pods.count > wanted {
            // Not-ready pods go first, then the newest.
            let order = pods.sorted { a, b in
                if Self.isReady(a) != Self.isReady(b) { return !Self.isReady(a) }
                return (a["metadata"]?["creationTimestamp"]?.stringValue ?? "")
                    > (b["metadata"]?["creationTimestamp"]?.stringValue ?? "")
            }
            for pod in order.prefix(pods.count - wanted) {
                _ = try? handler.deletePod(namespace: namespace, name: Self.name(pod), grace: nil)
            }
        }
        let current = Self.owned(
            by: replicaSet, store.list(Selection(resource: Pod.resource, namespace: namespace)).items
        ).filter { $0["metadata"]?["deletionTimestamp"] == nil }
        let ready = current.filter(Self.isReady).count
        let status: JSONValue = [
            "replicas": .int(Int64(current.count)), "fullyLabeledReplicas": .int(Int64(current.count)),
            "readyReplicas": .int(Int64(ready)), "availableReplicas": .int(Int64(ready)),
            "observedGeneration": replicaSet["metadata"]?["generation"] ?? 1,
        ]
        try setStatus(ReplicaSet.resource, replicaSet, status)
    }

    // MARK: - Endpoints

    func reconcileEndpoints() throws {
        let services = store.list(Selection(resource: Service.resource, namespace: nil)).items
        var wantedNames = Set<String>()
        for service in services {
            guard let selector = service["spec"]?["selector"]?.objectValue?.compactMapValues(\.stringValue),
                !selector.isEmpty
            else { continue }
            let namespace = Self.namespace(service)
            let name = Self.name(service)
            wantedNames.insert("\(namespace)/\(name)")
            let pods = store.list(Selection(resource: Pod.resource, namespace: namespace)).items.filter { pod in
                let labels = Self.labels(pod)
                return selector.allSatisfy { labels[$0.key] == $0.value } && pod["status"]?["podIP"]?.stringValue != nil
                    && pod["metadata"]?["deletionTimestamp"] == nil
            }.sorted { Self.name($0) < Self.name($1) }
            let servicePorts = service["spec"]?["ports"]?.arrayValue ?? []
            func address(_ pod: JSONValue) -> JSONValue {
                var address: JSONValue = [
                    "ip": pod["status"]?["podIP"] ?? .null, "nodeName": pod["spec"]?["nodeName"] ?? .null,
                    "targetRef": [
                        "kind": "Pod", "namespace": .string(namespace), "name": .string(Self.name(pod)),
                        "uid": .string(Self.uid(pod)),
                    ],
                ]
                // A pod with spec.hostname whose spec.subdomain is this service gets a DNS name under it.
                if let hostname = pod["spec"]?["hostname"], pod["spec"]?["subdomain"]?.stringValue == name {
                    address["hostname"] = hostname
                }
                return address
            }
            // Named target ports resolve per pod; the lab's pods of one service share their ports, so the first
            // pod decides.
            let ports: [JSONValue] = servicePorts.map { port in
                var target = port["targetPort"] ?? port["port"] ?? .null
                if let named = target.stringValue {
                    let containers = pods.first?["spec"]?["containers"]?.arrayValue ?? []
                    let match = containers.flatMap { $0["ports"]?.arrayValue ?? [] }.first {
                        $0["name"]?.stringValue == named
                    }
                    target = match?["containerPort"] ?? .null
                }
                var entry: JSONValue = ["port": target, "protocol": port["protocol"] ?? "TCP"]
                if let portName = port["name"] { entry["name"] = portName }
                return entry
            }.filter { $0["port"]?.intValue != nil }
            let ready = pods.filter(Self.isReady)
            let notReady = pods.filter { !Self.isReady($0) }
            var subset: [String: JSONValue] = ["ports": .array(ports)]
            if !ready.isEmpty { subset["addresses"] = .array(ready.map(address)) }
            if !notReady.isEmpty { subset["notReadyAddresses"] = .array(notReady.map(address)) }
            let endpoints: JSONValue = [
                "metadata": ["name": .string(name), "labels": service["metadata"]?["labels"] ?? [:]],
                "subsets": pods.isEmpty ? [] : [.object(subset)],
            ]
            try put(Endpoints.resource, namespace: namespace, name: name, endpoints) { $0["subsets"] }
            let slice: JSONValue = [
                "metadata": [
                    "name": .string("\(name)-ktlab"),
                    "labels": [
                        "kubernetes.io/service-name": .string(name), "endpointslice.kubernetes.io/managed-by": "ktlab",
                    ],
                    "ownerReferences": [Self.ownerReference(service, kind: "Service", apiVersion: "v1")],
                ],
                "addressType": "IPv4",
                "endpoints": .array(
                    pods.map { pod in
                        [
                            "addresses": [pod["status"]?["podIP"] ?? .null],
                            "conditions": [
                                "ready": .bool(Self.isReady(pod)), "serving": .bool(Self.isReady(pod)),
                                "terminating": false,
                            ],
                            "nodeName": pod["spec"]?["nodeName"] ?? .null,
                            "targetRef": [
                                "kind": "Pod", "namespace": .string(namespace), "name": .string(Self.name(pod)),
                                "uid": .string(Self.uid(pod)),
                            ],
                        ]
                    }),
                "ports": .array(ports),
            ]
            try put(EndpointSlice.resource, namespace: namespace, name: "\(name)-ktlab", slice) {
                ["endpoints": $0["endpoints"] ?? .null, "ports": $0["ports"] ?? .null]
            }
        }
        // Endpoints whose Service is gone go too (slices go with their owner).
        for endpoints in store.list(Selection(resource: Endpoints.resource, namespace: nil)).items
        where !wantedNames.contains("\(Self.namespace(endpoints))/\(Self.name(endpoints))") {
            _ = try? store.delete(Endpoints.resource, namespace: Self.namespace(endpoints), name: Self.name(endpoints))
        }
    }

    /// Creates the object, or replaces it when the part `compare` picks out differs.
    func put(
        _ resource: ResourceType, namespace: String, name: String, _ object: JSONValue,
        compare: (JSONValue) -> JSONValue?
    ) throws {
        if let existing = try? store.get(resource, namespace: namespace, name: name) {
            guard compare(existing) != compare(object) else { return }
            try store.modify(resource, namespace: namespace, name: name) { stored in
                for (key, value) in object.objectValue ?? [:] where key != "metadata" { stored[key] = value }
            }
        } else {
            _ = try store.create(resource, namespace: namespace, object: object)
        }
    }
}
