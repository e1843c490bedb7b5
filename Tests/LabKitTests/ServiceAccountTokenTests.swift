import Foundation
import Testing

@testable import LabKit

/// The lab's service-account tokens: a token names its account and only the lab that made it takes it.
struct ServiceAccountTokenTests {
    @Test func aTokenNamesItsAccountAndCannotBeForged() throws {
        let tokens = ServiceAccountTokens()
        let token = tokens.token(namespace: "dev", name: "kt-router")
        let account = try #require(tokens.account(of: token))
        #expect(account.namespace == "dev" && account.name == "kt-router")
        // Another account's name with this mac, another lab's key, and garbage: refused.
        #expect(tokens.account(of: token.replacingOccurrences(of: "kt-router", with: "admin")) == nil)
        #expect(ServiceAccountTokens().account(of: token) == nil)
        for bad in ["", "ktsa.", "ktsa.dev", "ktsa..x.00", "ktlab-admin-token", token + "0"] {
            #expect(tokens.account(of: bad) == nil, "\(bad)")
        }
        let user = ServiceAccountTokens.user(namespace: "dev", name: "kt-router")
        #expect(user.name == "system:serviceaccount:dev:kt-router")
        #expect(user.groups.contains("system:serviceaccounts:dev"))
    }

    @Test func theAuthenticatorTakesATokenOnlyWhileItsAccountExists() {
        let tokens = ServiceAccountTokens()
        let exists = AccountsBox()
        let authenticator = TokenAuthenticator(
            adminTokens: ["admin"], userFile: nil, serviceAccounts: (tokens, { exists.has($0, $1) }))
        let token = tokens.token(namespace: "dev", name: "kt-router")
        #expect(authenticator.user(forToken: token) == nil)
        exists.add("dev", "kt-router")
        #expect(authenticator.user(forToken: token)?.name == "system:serviceaccount:dev:kt-router")
        #expect(authenticator.user(forToken: "admin") == .admin)
    }

    final class AccountsBox: @unchecked Sendable {
        private let lock = NSLock()
        private var names: Set<String> = []
        func add(_ namespace: String, _ name: String) { lock.withLock { _ = names.insert("\(namespace)/\(name)") } }
        func has(_ namespace: String, _ name: String) -> Bool {
            lock.withLock { names.contains("\(namespace)/\(name)") }
        }
    }
}
