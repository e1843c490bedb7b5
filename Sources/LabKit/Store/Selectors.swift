import Foundation
import KubeKit

/// A label selector in query form (`app=web,tier!=db,env in (a,b),!legacy`), as apimachinery `labels.Parse`
/// reads it.
public struct LabelQuery: Sendable, Hashable {
    enum Requirement: Sendable, Hashable {
        case equals(String, String)
        case notEquals(String, String)
        case exists(String)
        case notExists(String)
        case isIn(String, Set<String>)
        case notIn(String, Set<String>)
    }

    var requirements: [Requirement] = []

    public init(parsing text: String) throws {
        for part in Self.split(text) {
            let item = part.trimmingCharacters(in: .whitespaces)
            if item.isEmpty { continue }
            if let range = item.range(of: " notin ") ?? item.range(of: " in ") {
                let key = item[..<range.lowerBound].trimmingCharacters(in: .whitespaces)
                var values = item[range.upperBound...].trimmingCharacters(in: .whitespaces)
                guard values.hasPrefix("("), values.hasSuffix(")") else {
                    throw APIStatusError.badRequest("unable to parse requirement: \(item): values must be in ( )")
                }
                values = String(values.dropFirst().dropLast())
                let set = Set(values.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
                requirements.append(item.contains(" notin ") ? .notIn(key, set) : .isIn(key, set))
            } else if let range = item.range(of: "!=") {
                requirements.append(.notEquals(String(item[..<range.lowerBound]), String(item[range.upperBound...])))
            } else if let range = item.range(of: "==") ?? item.range(of: "=") {
                requirements.append(.equals(String(item[..<range.lowerBound]), String(item[range.upperBound...])))
            } else if item.hasPrefix("!") {
                requirements.append(.notExists(String(item.dropFirst())))
            } else {
                guard item.allSatisfy({ $0.isLetter || $0.isNumber || "-_./".contains($0) }) else {
                    throw APIStatusError.badRequest("unable to parse requirement: \(item)")
                }
                requirements.append(.exists(item))
            }
        }
    }

    /// Splits on commas outside parentheses.
    static func split(_ text: String) -> [String] {
        var parts: [String] = []
        var current = ""
        var depth = 0
        for character in text {
            switch character {
            case "(": depth += 1
            case ")": depth -= 1
            case "," where depth == 0:
                parts.append(current)
                current = ""
                continue
            default: break
            }
            current.append(character)
        }
        parts.append(current)
        return parts
    }

    public func matches(_ labels: [String: String]) -> Bool {
        requirements.allSatisfy { requirement in
            switch requirement {
            case .equals(let key, let value): return labels[key] == value
            case .notEquals(let key, let value): return labels[key] != value
            case .exists(let key): return labels[key] != nil
            case .notExists(let key): return labels[key] == nil
            case .isIn(let key, let values): return labels[key].map(values.contains) ?? false
            case .notIn(let key, let values): return !(labels[key].map(values.contains) ?? false)
            }
        }
    }
}

/// A field selector (`metadata.name=x,status.phase!=Failed`): `=`, `==` and `!=` on a dotted path.
public struct FieldQuery: Sendable, Hashable {
    var requirements: [(path: [String], value: String, equal: Bool)] = []

    public static func == (lhs: FieldQuery, rhs: FieldQuery) -> Bool {
        lhs.requirements.map { "\($0.path)\($0.value)\($0.equal)" }
            == rhs.requirements.map { "\($0.path)\($0.value)\($0.equal)" }
    }

    public func hash(into hasher: inout Hasher) {
        for requirement in requirements { hasher.combine(requirement.path) }
    }

    public init(parsing text: String) throws {
        for part in text.split(separator: ",") {
            let item = String(part)
            if let range = item.range(of: "!=") {
                requirements.append(
                    (
                        item[..<range.lowerBound].split(separator: ".").map(String.init),
                        String(item[range.upperBound...]), false
                    ))
            } else if let range = item.range(of: "==") ?? item.range(of: "=") {
                requirements.append(
                    (
                        item[..<range.lowerBound].split(separator: ".").map(String.init),
                        String(item[range.upperBound...]), true
                    ))
            } else {
                throw APIStatusError.badRequest("invalid field selector: \(item)")
            }
        }
    }

    public func matches(_ object: JSONValue) -> Bool {
        requirements.allSatisfy { requirement in
            var value: JSONValue? = object
            for key in requirement.path { value = value?[key] }
            let text: String
            switch value {
            case .string(let string)?: text = string
            case .int(let number)?: text = String(number)
            case .bool(let flag)?: text = String(flag)
            default: text = ""
            }
            return (text == requirement.value) == requirement.equal
        }
    }
}
