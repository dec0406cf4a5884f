import Foundation

/// An IP network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`), or one address (`192.0.2.7`).
public struct IPNetwork: Sendable, Hashable, CustomStringConvertible {
    /// 4 or 16 bytes, with the bits beyond the prefix cleared.
    let address: [UInt8]
    let prefixLength: Int

    /// - Returns: `nil` when `text` is not an address with an optional `/prefix` that fits it.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard let address = ClientAddress.bytes(parts[0]) else { return nil }
        let length: Int
        if parts.count == 2 {
            guard let parsed = Int(parts[1]), (0...address.count * 8).contains(parsed) else { return nil }
            length = parsed
        } else {
            length = address.count * 8
        }
        self.address = Self.masked(address, prefixLength: length)
        self.prefixLength = length
    }

    public func contains(_ address: [UInt8]) -> Bool {
        address.count == self.address.count && Self.masked(address, prefixLength: prefixLength) == self.address
    }

    public var description: String {
        (ClientAddress.text(address) ?? "?") + "/\(prefixLength)"
    }

    private static func masked(_ address: [UInt8], prefixLength: Int) -> [UInt8] {
        address.enumerated().map { index, byte in
            let bits = min(8, max(0, prefixLength - index * 8))
            return bits == 8 ? byte : byte & ~(UInt8(0xFF) >> bits)
        }
    }
}

/// Which address a request comes from, for per-IP limits and the rejections topic.
///
/// Behind a load balancer every request's TCP peer is the balancer, so the peer alone would put all clients in one
/// bucket; but `X-Forwarded-For` is whatever the client wrote, so it is believed only as far as it was appended by
/// proxies we run. The answer is the right-most address that is not one of ours.
public enum ClientAddress {
    /// - Parameters:
    ///   - peer: The TCP peer's address.
    ///   - forwardedFor: Every `X-Forwarded-For` header value, in order.
    ///   - trustedProxies: The networks of our own proxies; empty means trust none and use the peer.
    public static func resolve(peer: String, forwardedFor: [String], trustedProxies: [IPNetwork]) -> String {
        guard !trustedProxies.isEmpty else { return peer }
        func isTrusted(_ address: String) -> Bool {
            guard let bytes = bytes(address) else { return false }
            return trustedProxies.contains { $0.contains(bytes) }
        }
        var client = peer
        var hops = forwardedFor.flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces) }
        while isTrusted(client), let hop = hops.popLast() {
            // A hop that is not an address was not written by a proxy of ours: stop at the last one we trust.
            guard let bytes = bytes(hop), let normalized = text(bytes) else { break }
            client = normalized
        }
        return client
    }

    /// The 4 or 16 bytes of an IPv4 or IPv6 address (an IPv4-mapped IPv6 address as its IPv4 bytes).
    static func bytes(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return nil }
        let bytes = withUnsafeBytes(of: &v6) { Array($0) }
        if bytes.prefix(10).allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF { return Array(bytes.suffix(4)) }
        return bytes
    }

    /// The canonical text of 4 or 16 address bytes.
    static func text(_ bytes: [UInt8]) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = bytes.count == 4 ? AF_INET : AF_INET6
        let written = bytes.withUnsafeBytes { raw in inet_ntop(family, raw.baseAddress, &buffer, socklen_t(buffer.count)) }
        guard written != nil else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
