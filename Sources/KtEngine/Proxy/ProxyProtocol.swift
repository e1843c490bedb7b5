import Foundation
import KtWire
import NIOCore

/// A request the proxy could not take, in words for the log and the client.
public struct ProxyError: Error, CustomStringConvertible, Equatable, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Where a client wants to go: an address, or a name the cluster side resolves (`socks5h`, HTTP proxies).
public struct ProxyDestination: Hashable, Sendable, CustomStringConvertible {
    public enum Host: Hashable, Sendable {
        case address(IPAddress)
        case name(String)
    }

    public var host: Host
    public var port: Int

    public init(host: Host, port: Int) {
        self.host = host
        self.port = port
    }

    /// The host as the tunnel's dial takes it: an address in text, or the name.
    public var hostText: String {
        switch host {
        case .address(let address): return address.description
        case .name(let name): return name
        }
    }

    public var description: String {
        if case .address(.v6(let address)) = host { return "[\(address)]:\(port)" }
        return "\(hostText):\(port)"
    }

    /// A name as a client wrote it: an address literal becomes an address; otherwise printable ASCII without
    /// spaces, 1 to 255 bytes.
    static func host(named text: String) throws -> Host {
        if let address = IPAddress(text) { return .address(address) }
        guard !text.isEmpty, text.utf8.count <= 255,
            text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f && $0 != UInt8(ascii: "/") })
        else { throw ProxyError("'\(text.prefix(64))' is not a host name") }
        return .name(text)
    }

    /// `host:port` or `[v6]:port` (an HTTP CONNECT target or the authority of a URL); `defaultPort` when the port
    /// is left out.
    static func parseAuthority(_ text: Substring, defaultPort: Int?) throws -> ProxyDestination {
        var hostPart = text
        var portPart: Substring?
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw ProxyError("'\(text.prefix(64))' has no ']'") }
            hostPart = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":") else { throw ProxyError("'\(text.prefix(64))' is not host:port") }
                portPart = rest.dropFirst()
            }
            guard let address = IPv6Address(String(hostPart)) else {
                throw ProxyError("'\(hostPart.prefix(64))' is not an IPv6 address")
            }
            return ProxyDestination(host: .address(.v6(address)), port: try port(portPart, defaultPort, text))
        }
        if let colon = text.lastIndex(of: ":") {
            hostPart = text[..<colon]
            portPart = text[text.index(after: colon)...]
        }
        return ProxyDestination(host: try host(named: String(hostPart)), port: try port(portPart, defaultPort, text))
    }

    private static func port(_ text: Substring?, _ defaultPort: Int?, _ whole: Substring) throws -> Int {
        guard let text else {
            guard let defaultPort else { throw ProxyError("'\(whole.prefix(64))' has no port") }
            return defaultPort
        }
        guard let port = Int(text), (1...65535).contains(port) else {
            throw ProxyError("'\(text.prefix(16))' is not a port (1-65535)")
        }
        return port
    }
}

/// SOCKS version 5 (RFC 1928) as the proxy speaks it: no authentication, CONNECT and UDP ASSOCIATE.
///
/// Every parser takes the bytes received so far and returns nil when more are needed, leaving the buffer as it
/// was; on success it consumes exactly what it parsed.
public enum Socks5 {
    public static let version: UInt8 = 5
    public static let noAuthentication: UInt8 = 0
    /// RFC 1929.
    public static let usernamePassword: UInt8 = 2
    public static let noAcceptableMethod: UInt8 = 0xff

    public enum Command: UInt8, Sendable {
        case connect = 1
        case bind = 2
        case udpAssociate = 3
    }

    public enum Reply: UInt8, Sendable {
        case succeeded = 0
        case generalFailure = 1
        case notAllowed = 2
        case networkUnreachable = 3
        case hostUnreachable = 4
        case connectionRefused = 5
        case ttlExpired = 6
        case commandNotSupported = 7
        case addressTypeNotSupported = 8
    }

    public struct Request: Equatable, Sendable {
        public var command: UInt8
        public var destination: ProxyDestination

        public init(command: UInt8, destination: ProxyDestination) {
            self.command = command
            self.destination = destination
        }
    }

    /// The greeting: version, then the authentication methods the client offers.
    public static func parseGreeting(_ buffer: inout ByteBuffer) throws -> [UInt8]? {
        var view = buffer
        guard let version = view.readInteger(as: UInt8.self), let count = view.readInteger(as: UInt8.self) else {
            return nil
        }
        guard version == Self.version else { throw ProxyError("SOCKS version \(version) (only 5 is spoken)") }
        guard count > 0 else { throw ProxyError("the SOCKS greeting offers no authentication method") }
        guard let methods = view.readBytes(length: Int(count)) else { return nil }
        buffer = view
        return methods
    }

    /// RFC 1929's username/password request: version 1, ULEN, UNAME, PLEN, PASSWD.
    public static func parseUsernamePassword(_ buffer: inout ByteBuffer) throws -> (username: String, password: String)?
    {
        var view = buffer
        guard let version = view.readInteger(as: UInt8.self), let userLength = view.readInteger(as: UInt8.self)
        else { return nil }
        guard version == 1 else {
            throw ProxyError("username/password negotiation of version \(version) (RFC 1929 is version 1)")
        }
        guard let user = view.readBytes(length: Int(userLength)), let passwordLength = view.readInteger(as: UInt8.self),
            let password = view.readBytes(length: Int(passwordLength))
        else { return nil }
        buffer = view
        return (String(decoding: user, as: UTF8.self), String(decoding: password, as: UTF8.self))
    }

    /// A request: version, command, reserved, address.
    public static func parseRequest(_ buffer: inout ByteBuffer) throws -> Request? {
        var view = buffer
        guard let version = view.readInteger(as: UInt8.self), let command = view.readInteger(as: UInt8.self),
            view.readInteger(as: UInt8.self) != nil
        else { return nil }
        guard version == Self.version else { throw ProxyError("SOCKS request of version \(version)") }
        guard let destination = try parseAddress(&view) else { return nil }
        buffer = view
        return Request(command: command, destination: destination)
    }

    /// ATYP, address, port.
    static func parseAddress(_ buffer: inout ByteBuffer) throws -> ProxyDestination? {
        guard let type = buffer.readInteger(as: UInt8.self) else { return nil }
        let host: ProxyDestination.Host
        switch type {
        case 1:
            guard let bits = buffer.readInteger(as: UInt32.self) else { return nil }
            host = .address(.v4(IPv4Address(bits: bits)))
        case 4:
            guard let high = buffer.readInteger(as: UInt64.self), let low = buffer.readInteger(as: UInt64.self) else {
                return nil
            }
            host = .address(.v6(IPv6Address(bits: UInt128(high) << 64 | UInt128(low))))
        case 3:
            guard let length = buffer.readInteger(as: UInt8.self) else { return nil }
            guard let bytes = buffer.readBytes(length: Int(length)) else { return nil }
            host = try ProxyDestination.host(named: String(decoding: bytes, as: UTF8.self))
        default:
            throw ProxyError("SOCKS address type \(type) (1, 3 and 4 are known)")
        }
        guard let port = buffer.readInteger(as: UInt16.self) else { return nil }
        return ProxyDestination(host: host, port: Int(port))
    }

    static func writeAddress(_ destination: ProxyDestination, into buffer: inout ByteBuffer) {
        switch destination.host {
        case .address(.v4(let address)):
            buffer.writeInteger(UInt8(1))
            buffer.writeInteger(address.bits)
        case .address(.v6(let address)):
            buffer.writeInteger(UInt8(4))
            buffer.writeInteger(UInt64(truncatingIfNeeded: address.bits >> 64))
            buffer.writeInteger(UInt64(truncatingIfNeeded: address.bits))
        case .name(let name):
            let bytes = Array(name.utf8.prefix(255))
            buffer.writeInteger(UInt8(3))
            buffer.writeInteger(UInt8(bytes.count))
            buffer.writeBytes(bytes)
        }
        buffer.writeInteger(UInt16(truncatingIfNeeded: destination.port))
    }

    /// A reply with the address the proxy bound (0.0.0.0:0 when there is none to tell).
    public static func reply(_ reply: Reply, bound: ProxyDestination? = nil, allocator: ByteBufferAllocator)
        -> ByteBuffer
    {
        var buffer = allocator.buffer(capacity: 22)
        buffer.writeBytes([Self.version, reply.rawValue, 0])
        writeAddress(bound ?? ProxyDestination(host: .address(.v4(IPv4Address(0, 0, 0, 0))), port: 0), into: &buffer)
        return buffer
    }

    /// A UDP ASSOCIATE datagram: reserved (2), fragment, address, then the payload (the rest of the datagram).
    /// Fragments are not supported (RFC 1928 lets a server drop them).
    public static func parseDatagram(_ datagram: inout ByteBuffer) throws -> ProxyDestination {
        guard let reserved = datagram.readInteger(as: UInt16.self), let fragment = datagram.readInteger(as: UInt8.self)
        else { throw ProxyError("a SOCKS UDP datagram shorter than its header") }
        guard reserved == 0 else { throw ProxyError("a SOCKS UDP datagram with reserved bytes set") }
        guard fragment == 0 else { throw ProxyError("a fragmented SOCKS UDP datagram (fragment \(fragment))") }
        guard let destination = try parseAddress(&datagram) else {
            throw ProxyError("a SOCKS UDP datagram shorter than its address")
        }
        return destination
    }

    /// The header to put before a datagram from `source`.
    public static func datagramHeader(from source: ProxyDestination, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 22)
        buffer.writeBytes([0, 0, 0])
        writeAddress(source, into: &buffer)
        return buffer
    }
}

/// A request to the HTTP proxy: `CONNECT host:port` (a tunnel), or a request for an absolute `http://` URL
/// (forwarded to the origin with an origin-form target, without the proxy's own headers, `Connection: close`).
public struct HTTPProxyRequest: Equatable, Sendable {
    public var method: String
    public var destination: ProxyDestination
    /// What to send to the origin first (nil for CONNECT).
    public var forwardedHead: String?
    /// The `Proxy-Authorization` header's value, if the client sent one (it is never forwarded).
    public var proxyAuthorization: String?

    public static let maximumHeadLength = 65536

    /// The request head (up to the empty line); nil until it has all arrived.
    public static func parse(_ buffer: inout ByteBuffer) throws -> HTTPProxyRequest? {
        let readable = buffer.readableBytesView
        let limit = min(readable.count, maximumHeadLength)
        guard let end = Self.endOfHead(readable.prefix(limit)) else {
            if readable.count >= maximumHeadLength {
                throw ProxyError("the request head is longer than \(maximumHeadLength / 1024) KiB")
            }
            return nil
        }
        let headBytes = readable[readable.startIndex..<end]
        let head = String(decoding: headBytes, as: UTF8.self)
        var lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
        while lines.last?.isEmpty == true { lines.removeLast() }
        guard let requestLine = lines.first else { throw ProxyError("an empty request") }
        let parts = requestLine.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[2].hasPrefix("HTTP/1.") else {
            throw ProxyError("'\(requestLine.prefix(80))' is not an HTTP/1 request line")
        }
        let method = String(parts[0])
        guard !method.isEmpty, method.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            throw ProxyError("'\(method.prefix(16))' is not a method")
        }
        let target = parts[1]
        buffer.moveReaderIndex(forwardBy: end - readable.startIndex)
        let authorization = lines.dropFirst().first { $0.prefix { $0 != ":" }.lowercased() == "proxy-authorization" }
            .map { String($0.drop { $0 != ":" }.dropFirst().trimmingCharacters(in: .whitespaces)) }
        if method == "CONNECT" {
            return HTTPProxyRequest(
                method: method, destination: try ProxyDestination.parseAuthority(target, defaultPort: nil),
                forwardedHead: nil, proxyAuthorization: authorization)
        }
        guard target.lowercased().hasPrefix("http://") else {
            if target.lowercased().hasPrefix("https://") {
                throw ProxyError("an https:// URL through a plain proxy request; use CONNECT (https_proxy)")
            }
            throw ProxyError("'\(target.prefix(80))' is not an absolute http:// URL (this is a proxy)")
        }
        let rest = target.dropFirst("http://".count)
        let slash = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let authority = rest[..<slash]
        var path = String(rest[slash...])
        if path.isEmpty { path = "/" } else if path.hasPrefix("?") { path = "/" + path }
        let destination = try ProxyDestination.parseAuthority(authority, defaultPort: 80)
        var headers: [Substring] = []
        var hasHost = false
        for line in lines.dropFirst() {
            let name = line.prefix { $0 != ":" }.lowercased()
            if ["proxy-connection", "proxy-authorization", "connection", "keep-alive"].contains(name) { continue }
            if name == "host" { hasHost = true }
            headers.append(line)
        }
        var forwarded = "\(method) \(path) \(parts[2])\r\n"
        if !hasHost { forwarded += "Host: \(authority)\r\n" }
        for header in headers { forwarded += header + "\r\n" }
        forwarded += "Connection: close\r\n\r\n"
        return HTTPProxyRequest(
            method: method, destination: destination, forwardedHead: forwarded, proxyAuthorization: authorization)
    }

    /// `Basic base64(user:password)` as username and password; nil for anything else.
    public static func basicCredentials(_ value: String) -> (username: String, password: String)? {
        let words = value.split(separator: " ", maxSplits: 1)
        guard words.count == 2, words[0].lowercased() == "basic",
            let data = Data(base64Encoded: String(words[1]).trimmingCharacters(in: .whitespaces))
        else { return nil }
        let text = String(decoding: data, as: UTF8.self)
        guard let colon = text.firstIndex(of: ":") else { return nil }
        return (String(text[..<colon]), String(text[text.index(after: colon)...]))
    }

    /// The index just past the head's closing empty line.
    static func endOfHead(_ bytes: ByteBufferView.SubSequence) -> Int? {
        var index = bytes.startIndex
        while index + 3 < bytes.endIndex {
            if bytes[index] == 13, bytes[index + 1] == 10, bytes[index + 2] == 13, bytes[index + 3] == 10 {
                return index + 4
            }
            index += 1
        }
        return nil
    }
}
