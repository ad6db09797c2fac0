import Foundation

// The pure half of carillon-bench's etcd client: HTTP/1.1 response framing
// and etcd's v3 JSON gateway (requests and replies). No sockets here, so the
// tests check it with canned bytes; the socket client is in carillon-bench.

/// One HTTP/1.1 response: status, headers (names lowercased) and the body
/// (de-chunked; trailers of a chunked body are merged into the headers).
public struct HTTPResponse: Sendable, Equatable {
    public var status: Int
    public var reason: String
    /// Header fields by lowercased name; a repeated field keeps its last value.
    public var headers: [String: String]
    public var body: [UInt8]

    public init(status: Int, reason: String, headers: [String: String], body: [UInt8]) {
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
    }

    /// The body as UTF-8 text (invalid bytes replaced).
    public var text: String { String(decoding: body, as: UTF8.self) }
}

/// Why bytes are not an HTTP/1.1 response this parser can frame.
public enum HTTPParseError: Error, Equatable, CustomStringConvertible {
    case badStatusLine(String)
    case badHeader(String)
    case badChunkSize(String)
    case badContentLength(String)
    /// Neither Content-Length nor chunked: the body would end at connection
    /// close, which a keep-alive client cannot use.
    case noLength(status: Int)
    case headTooLarge

    public var description: String {
        switch self {
        case .badStatusLine(let line): return "not an HTTP/1.x status line: \(line)"
        case .badHeader(let line): return "malformed header line: \(line)"
        case .badChunkSize(let line): return "malformed chunk size line: \(line)"
        case .badContentLength(let value): return "malformed Content-Length: \(value)"
        case .noLength(let status): return "response \(status) has neither Content-Length nor chunked transfer coding"
        case .headTooLarge: return "response head larger than 64 KiB"
        }
    }
}

/// Incremental framing of HTTP/1.1 responses on a keep-alive connection:
/// ``append(_:)`` what the socket gave, then ``next()`` until it returns nil.
/// Bodies are delimited by `Content-Length` or `Transfer-Encoding: chunked`
/// (with trailers); 1xx, 204 and 304 responses have none. Responses to HEAD
/// requests are not supported (the client sends none).
public struct HTTPResponseParser: Sendable {
    private var buffer: [UInt8] = []
    private var start = 0

    public init() {}

    /// Bytes received and not yet returned as part of a response.
    public var pendingByteCount: Int { buffer.count - start }

    public mutating func append<Bytes: Sequence>(_ bytes: Bytes) where Bytes.Element == UInt8 {
        if start > 0, start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        } else if start > 65_536 {
            buffer.removeFirst(start)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// The next complete response, consumed from the buffer; nil while more bytes are needed.
    public mutating func next() throws -> HTTPResponse? {
        guard let headEnd = find(crlfcrlf, from: start) else {
            if buffer.count - start > 65_536 { throw HTTPParseError.headTooLarge }
            return nil
        }
        let lines = String(decoding: buffer[start..<headEnd], as: UTF8.self).components(separatedBy: "\r\n")
        let statusLine = lines[0]
        let parts = statusLine.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]), (100...999).contains(status) else {
            throw HTTPParseError.badStatusLine(statusLine)
        }
        let reason = parts.count > 2 ? String(parts[2]) : ""
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { throw HTTPParseError.badHeader(line) }
            headers[line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()] =
                line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let bodyStart = headEnd + 4

        if (100..<200).contains(status) || status == 204 || status == 304 {
            start = bodyStart
            // An interim response (100 Continue) is skipped: the final one follows.
            if (100..<200).contains(status) { return try next() }
            return HTTPResponse(status: status, reason: reason, headers: headers, body: [])
        }
        if headers["transfer-encoding"]?.lowercased().split(separator: ",").last?.trimmingCharacters(in: .whitespaces) == "chunked" {
            var cursor = bodyStart
            var body: [UInt8] = []
            while true {
                guard let lineEnd = find(crlf, from: cursor) else { return nil }
                let sizeLine = String(decoding: buffer[cursor..<lineEnd], as: UTF8.self)
                let sizeText = sizeLine.split(separator: ";", maxSplits: 1).first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
                guard !sizeText.isEmpty, let size = Int(sizeText, radix: 16), size >= 0 else { throw HTTPParseError.badChunkSize(sizeLine) }
                cursor = lineEnd + 2
                if size == 0 {
                    // Trailer fields, then an empty line.
                    while true {
                        guard let end = find(crlf, from: cursor) else { return nil }
                        if end == cursor {
                            start = end + 2
                            return HTTPResponse(status: status, reason: reason, headers: headers, body: body)
                        }
                        let line = String(decoding: buffer[cursor..<end], as: UTF8.self)
                        guard let colon = line.firstIndex(of: ":") else { throw HTTPParseError.badHeader(line) }
                        headers[line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()] =
                            line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                        cursor = end + 2
                    }
                }
                guard buffer.count >= cursor + size + 2 else { return nil }
                body.append(contentsOf: buffer[cursor..<(cursor + size)])
                guard buffer[cursor + size] == 13, buffer[cursor + size + 1] == 10 else {
                    throw HTTPParseError.badChunkSize("chunk not followed by CRLF")
                }
                cursor += size + 2
            }
        }
        guard let lengthText = headers["content-length"] else { throw HTTPParseError.noLength(status: status) }
        guard let length = Int(lengthText), length >= 0 else { throw HTTPParseError.badContentLength(lengthText) }
        guard buffer.count >= bodyStart + length else { return nil }
        start = bodyStart + length
        return HTTPResponse(status: status, reason: reason, headers: headers, body: Array(buffer[bodyStart..<(bodyStart + length)]))
    }

    private let crlf: [UInt8] = [13, 10]
    private let crlfcrlf: [UInt8] = [13, 10, 13, 10]

    private func find(_ pattern: [UInt8], from: Int) -> Int? {
        guard buffer.count >= pattern.count else { return nil }
        var i = from
        let last = buffer.count - pattern.count
        while i <= last {
            if buffer[i] == pattern[0] {
                var match = true
                for j in 1..<pattern.count where buffer[i + j] != pattern[j] {
                    match = false
                    break
                }
                if match { return i }
            }
            i += 1
        }
        return nil
    }
}

/// An error etcd's gateway answered with (a non-200 status), or a reply without a field it must have.
public struct EtcdGatewayError: Error, Equatable, CustomStringConvertible {
    public var status: Int
    public var message: String
    public init(status: Int, message: String) {
        self.status = status
        self.message = message
    }
    public var description: String { "etcd gateway: HTTP \(status): \(message)" }
}

/// Request bodies for etcd 3.4's v3 JSON gateway (`/v3/...` on the client
/// port) and the fields of its replies. Keys and values travel base64-encoded;
/// 64-bit integers (lease IDs, revisions, TTLs, counts) as decimal strings.
public enum EtcdGateway {
    /// Standard base64 of the UTF-8 bytes of `text`.
    public static func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }

    /// The text behind a base64 field, or nil when it is not base64.
    public static func decodeBase64(_ text: String) -> String? {
        Data(base64Encoded: text).map { String(decoding: $0, as: UTF8.self) }
    }

    /// The end of the range that holds every key starting with `prefix`
    /// (its last byte incremented; etcd's `clientv3.GetPrefixRangeEnd`), as raw text.
    public static func prefixRangeEnd(_ prefix: String) -> [UInt8] {
        var bytes = Array(prefix.utf8)
        while let last = bytes.last {
            if last < 0xFF {
                bytes[bytes.count - 1] = last + 1
                return bytes
            }
            bytes.removeLast()
        }
        return [0]
    }

    /// `POST /v3/lease/grant`.
    public static func leaseGrantBody(ttlSeconds: Int) -> String { "{\"TTL\":\(ttlSeconds)}" }

    /// `POST /v3/lease/timetolive`.
    public static func leaseTimeToLiveBody(lease: String) -> String { "{\"ID\":\"\(lease)\"}" }

    /// `POST /v3/lock/lock`: the lock `name` held under `lease` (the key etcd creates is `name/<lease hex>`).
    public static func lockBody(name: String, lease: String) -> String {
        "{\"name\":\"\(base64(name))\",\"lease\":\"\(lease)\"}"
    }

    /// `POST /v3/lock/unlock` with the key `/v3/lock/lock` returned (already base64).
    public static func unlockBody(key base64Key: String) -> String { "{\"key\":\"\(base64Key)\"}" }

    /// `POST /v3/kv/put`.
    public static func putBody(key: String, value: String) -> String {
        "{\"key\":\"\(base64(key))\",\"value\":\"\(base64(value))\"}"
    }

    /// `POST /v3/kv/range` for one key; `serializable` reads the local copy
    /// without a quorum round (the default is linearizable).
    public static func rangeBody(key: String, serializable: Bool = false) -> String {
        "{\"key\":\"\(base64(key))\"\(serializable ? ",\"serializable\":true" : "")}"
    }

    /// `POST /v3/kv/range` counting the keys under `prefix` (e.g. a lock's waiters, `name/`).
    public static func countPrefixBody(_ prefix: String) -> String {
        let end = Data(prefixRangeEnd(prefix)).base64EncodedString()
        return "{\"key\":\"\(base64(prefix))\",\"range_end\":\"\(end)\",\"count_only\":true}"
    }

    /// The reply's JSON object when the status is 200; otherwise the gateway's
    /// error (its `error` or `message` field, else the body).
    public static func object(_ response: HTTPResponse) throws -> [String: Any] {
        let parsed = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]
        guard response.status == 200 else {
            let message = (parsed?["error"] as? String) ?? (parsed?["message"] as? String) ?? response.text
            throw EtcdGatewayError(status: response.status, message: message)
        }
        guard let parsed else { throw EtcdGatewayError(status: response.status, message: "reply is not a JSON object: \(response.text.prefix(200))") }
        return parsed
    }

    /// The field at `path` (e.g. `["header", "revision"]`, `["kvs", "0", "value"]`
    /// with array indices as numbers) as text: strings as they are, numbers
    /// printed; nil when absent, an object or an array.
    public static func field(_ path: [String], in object: [String: Any]) -> String? {
        var current: Any = object
        for component in path {
            if let dictionary = current as? [String: Any], let next = dictionary[component] {
                current = next
            } else if let array = current as? [Any], let index = Int(component), array.indices.contains(index) {
                current = array[index]
            } else {
                return nil
            }
        }
        switch current {
        case let text as String: return text
        case let number as NSNumber: return number.stringValue
        default: return nil
        }
    }

    /// The field at `path`, or an error naming it.
    public static func required(_ path: [String], in object: [String: Any], reply: String) throws -> String {
        guard let value = field(path, in: object) else {
            throw EtcdGatewayError(status: 200, message: "reply to \(reply) has no \(path.joined(separator: ".")) field")
        }
        return value
    }
}
