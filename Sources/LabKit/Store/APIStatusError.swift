import Foundation
import KubeKit

/// An error the API server answers with: rendered as a `Status` whose HTTP code equals `code`
/// (apimachinery `pkg/api/errors`).
public struct APIStatusError: Error, Sendable, Hashable, CustomStringConvertible {
    public var code: Int
    public var reason: String
    public var message: String
    public var details: JSONValue?

    public init(code: Int, reason: String, message: String, details: JSONValue? = nil) {
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
    }

    public var description: String { "\(code) \(reason): \(message)" }

    public var document: JSONValue {
        var members: [String: JSONValue] = [
            "kind": "Status", "apiVersion": "v1", "metadata": .object([:]), "status": "Failure",
            "message": .string(message), "reason": .string(reason), "code": .int(Int64(code)),
        ]
        if let details { members["details"] = details }
        return .object(members)
    }

    static func details(_ resource: ResourceType, _ name: String) -> JSONValue {
        .object(["name": .string(name), "group": .string(resource.group), "kind": .string(resource.plural)])
    }

    public static func notFound(_ resource: ResourceType, _ name: String) -> APIStatusError {
        APIStatusError(
            code: 404, reason: "NotFound", message: "\(resource) \"\(name)\" not found",
            details: details(resource, name))
    }

    public static func alreadyExists(_ resource: ResourceType, _ name: String) -> APIStatusError {
        APIStatusError(
            code: 409, reason: "AlreadyExists", message: "\(resource) \"\(name)\" already exists",
            details: details(resource, name))
    }

    public static func conflict(_ resource: ResourceType, _ name: String) -> APIStatusError {
        APIStatusError(
            code: 409, reason: "Conflict",
            message: "Operation cannot be fulfilled on \(resource) \"\(name)\": the object has been modified; please "
                + "apply your changes to the latest version and try again",
            details: details(resource, name))
    }

    public static func invalid(_ resource: ResourceType, _ name: String, field: String, _ problem: String)
        -> APIStatusError
    {
        APIStatusError(
            code: 422, reason: "Invalid",
            message: "\(resource.kind)\(resource.group.isEmpty ? "" : ".\(resource.group)") \"\(name)\" is invalid: "
                + "\(field): \(problem)",
            details: .object([
                "name": .string(name), "group": .string(resource.group), "kind": .string(resource.kind),
                "causes": .array([
                    .object(["reason": "FieldValueInvalid", "message": .string(problem), "field": .string(field)])
                ]),
            ]))
    }

    public static func badRequest(_ message: String) -> APIStatusError {
        APIStatusError(code: 400, reason: "BadRequest", message: message)
    }

    public static func gone(_ message: String) -> APIStatusError {
        APIStatusError(code: 410, reason: "Expired", message: message)
    }

    public static let unknownPath = APIStatusError(
        code: 404, reason: "NotFound", message: "the server could not find the requested resource",
        details: .object([:]))
}
