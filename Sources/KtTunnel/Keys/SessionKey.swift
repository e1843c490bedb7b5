@preconcurrency import Crypto
import Foundation
import NIOCore
import NIOSSH

/// Why a key text was not accepted.
public struct KeyFormatError: Error, CustomStringConvertible, Sendable {
    public var description: String
}

/// A per-session ed25519 key: the private half stays on the laptop (mode 0600 when written), the public half goes to
/// the shadow pod as an `authorized_keys` line.
public struct SessionKey: Sendable {
    /// The 32-byte ed25519 seed (CryptoKit's key type is not Sendable; the bytes are).
    private let seed: [UInt8]

    /// A fresh key.
    public init() {
        seed = [UInt8](Curve25519.Signing.PrivateKey().rawRepresentation)
    }

    public init(privateKey: Curve25519.Signing.PrivateKey) {
        seed = [UInt8](privateKey.rawRepresentation)
    }

    /// A key from its seed in base64 (`seedBase64`): how ktctl hands the shadow its host key, so that the shadow's
    /// identity is known before it starts and no log line can claim another. Throws when the text is not 32 bytes
    /// of base64.
    public init(seedBase64 text: String) throws {
        guard let data = Data(base64Encoded: text.trimmingCharacters(in: .whitespacesAndNewlines)), data.count == 32
        else { throw KeyFormatError(description: "not an ed25519 seed (32 bytes in base64)") }
        seed = [UInt8](data)
    }

    /// The 32-byte seed in base64.
    public var seedBase64: String { Data(seed).base64EncodedString() }

    /// The key as swift-crypto holds it.
    public var privateKey: Curve25519.Signing.PrivateKey {
        do {
            return try Curve25519.Signing.PrivateKey(rawRepresentation: seed)
        } catch {
            preconditionFailure("a 32-byte ed25519 seed is always a valid key: \(error)")
        }
    }

    /// The key as swift-nio-ssh uses it.
    public var sshPrivateKey: NIOSSHPrivateKey { NIOSSHPrivateKey(ed25519Key: privateKey) }

    /// The public key as swift-nio-ssh uses it.
    public var sshPublicKey: NIOSSHPublicKey { sshPrivateKey.publicKey }

    /// `ssh-ed25519 AAAA… comment`, one `authorized_keys` line.
    public func authorizedKeysLine(comment: String = "ktctl") -> String {
        String(openSSHPublicKey: sshPublicKey) + " " + comment
    }

    /// The key in OpenSSH's private key format (`-----BEGIN OPENSSH PRIVATE KEY-----`, PROTOCOL.key), unencrypted,
    /// so that a stock `ssh -i` can use the session key too.
    public func openSSHPrivateKey(comment: String = "ktctl") -> String {
        let publicBytes = [UInt8](privateKey.publicKey.rawRepresentation)
        let seed = [UInt8](privateKey.rawRepresentation)
        var publicBlob = ByteBuffer()
        publicBlob.writeSSHString(Array("ssh-ed25519".utf8))
        publicBlob.writeSSHString(publicBytes)

        var privateSection = ByteBuffer()
        // Two equal check integers let a decryptor see whether its passphrase was right; unencrypted, any value works.
        let check = UInt32.random(in: 0...UInt32.max)
        privateSection.writeInteger(check)
        privateSection.writeInteger(check)
        privateSection.writeSSHString(Array("ssh-ed25519".utf8))
        privateSection.writeSSHString(publicBytes)
        privateSection.writeSSHString(seed + publicBytes)
        privateSection.writeSSHString(Array(comment.utf8))
        // Padded to the cipher block size (8 for "none") with 1, 2, 3, …
        var pad: UInt8 = 1
        while privateSection.readableBytes % 8 != 0 {
            privateSection.writeInteger(pad)
            pad += 1
        }

        var whole = ByteBuffer()
        whole.writeBytes(Array("openssh-key-v1".utf8) + [0])
        whole.writeSSHString(Array("none".utf8))  // cipher
        whole.writeSSHString(Array("none".utf8))  // kdf
        whole.writeSSHString([])  // kdf options
        whole.writeInteger(UInt32(1))  // number of keys
        whole.writeSSHString(Array(buffer: publicBlob))
        whole.writeSSHString(Array(buffer: privateSection))
        let base64 = Data(Array(buffer: whole)).base64EncodedString()
        var lines = ["-----BEGIN OPENSSH PRIVATE KEY-----"]
        var index = base64.startIndex
        while index < base64.endIndex {
            let end = base64.index(index, offsetBy: 70, limitedBy: base64.endIndex) ?? base64.endIndex
            lines.append(String(base64[index..<end]))
            index = end
        }
        lines.append("-----END OPENSSH PRIVATE KEY-----")
        return lines.joined(separator: "\n") + "\n"
    }

    /// Writes the private key for `ssh -i` with mode 0600; the file must not exist yet.
    public func writePrivateKey(to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw TunnelError.keyFile(path: path, errno: errno) }
        defer { close(fd) }
        let bytes = Array(openSSHPrivateKey().utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count else { throw TunnelError.keyFile(path: path, errno: errno) }
    }
}

/// A host key's OpenSSH fingerprint, `SHA256:` and the unpadded base64 of the SHA-256 of its wire form, as
/// `ssh-keygen -l` prints it.
public func hostKeyFingerprint(_ key: NIOSSHPublicKey) -> String {
    // The OpenSSH public key line is "type base64(blob)"; the fingerprint is over the blob.
    let line = String(openSSHPublicKey: key)
    let parts = line.split(separator: " ")
    guard parts.count >= 2, let blob = Data(base64Encoded: String(parts[1])) else { return "SHA256:?" }
    let digest = SHA256.hash(data: blob)
    var text = Data(digest).base64EncodedString()
    while text.hasSuffix("=") { text.removeLast() }
    return "SHA256:" + text
}

extension ByteBuffer {
    /// An SSH `string`: a 32-bit length, then the bytes (RFC 4251 §5).
    mutating func writeSSHString(_ bytes: [UInt8]) {
        writeInteger(UInt32(bytes.count))
        writeBytes(bytes)
    }
}
