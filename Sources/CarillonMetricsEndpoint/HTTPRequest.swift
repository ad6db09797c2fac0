// The little of HTTP/1.1 (RFC 9112) that a scrape endpoint needs: a request
// head parsed from bytes (pure, no I/O), and response heads. Anything outside
// that little is refused with a 4xx/5xx status, never trapped on: the bytes
// come from whoever can reach the port.

/// The statuses the responder answers with.
public enum HTTPStatus: Int, Sendable, Hashable {
    case ok = 200
    case badRequest = 400
    case notFound = 404
    case methodNotAllowed = 405
    case requestTimeout = 408
    case headerFieldsTooLarge = 431
    case versionNotSupported = 505

    public var reason: String {
        switch self {
        case .ok: return "OK"
        case .badRequest: return "Bad Request"
        case .notFound: return "Not Found"
        case .methodNotAllowed: return "Method Not Allowed"
        case .requestTimeout: return "Request Timeout"
        case .headerFieldsTooLarge: return "Request Header Fields Too Large"
        case .versionNotSupported: return "HTTP Version Not Supported"
        }
    }
}

/// What the responder acts on in a request head.
public struct HTTPRequestHead: Sendable, Hashable {
    public var method: String
    /// The target's path: origin form without its query, the path of an
    /// absolute form (`http://host/metrics` → `/metrics`), or `*`.
    public var path: String
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    public var minorVersion: Int
    /// Whether the client keeps the connection open after the response:
    /// HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with
    /// `Connection: keep-alive`.
    public var keepAlive: Bool
    /// A body follows (`Content-Length` above 0, or any `Transfer-Encoding`).
    /// The responder reads no bodies, so it answers and then closes: the next
    /// request's start could not be found.
    public var hasBody: Bool

    public init(method: String, path: String, minorVersion: Int, keepAlive: Bool, hasBody: Bool) {
        self.method = method
        self.path = path
        self.minorVersion = minorVersion
        self.keepAlive = keepAlive
        self.hasBody = hasBody
    }
}

/// The outcome of parsing the bytes received so far on a connection.
public enum HTTPParseResult: Sendable, Hashable {
    /// No complete head yet, and still room for one: read more.
    case incomplete
    /// A complete head, taking the first `consumed` bytes (empty lines before it included).
    case request(HTTPRequestHead, consumed: Int)
    /// Not a request this responder can answer: reply with this status and close.
    case invalid(HTTPStatus)
}

public enum HTTPRequestParser {
    /// The longest request head accepted, request line and header lines with
    /// their line ends. A scraper's head is a few hundred bytes; a longer one
    /// is refused with 431 rather than buffered.
    public static let maxHeadBytes = 8192
    /// The most header lines accepted (431 beyond).
    public static let maxHeaderLines = 64

    private static let cr = UInt8(ascii: "\r"), lf = UInt8(ascii: "\n"), space = UInt8(ascii: " "), tab = UInt8(ascii: "\t")

    /// Parses the head at the start of `bytes`. Lines may end in CRLF or a
    /// bare LF; empty lines before the request line are skipped (RFC 9112 §2.2).
    public static func parse(_ bytes: ArraySlice<UInt8>) -> HTTPParseResult {
        let base = bytes.startIndex
        var lineStart = base
        while lineStart < bytes.endIndex, bytes[lineStart] == cr || bytes[lineStart] == lf { lineStart += 1 }
        var lines: [ArraySlice<UInt8>] = []
        while true {
            guard let newline = bytes[lineStart...].firstIndex(of: lf) else {
                return bytes.count >= maxHeadBytes ? .invalid(.headerFieldsTooLarge) : .incomplete
            }
            if newline + 1 - base > maxHeadBytes { return .invalid(.headerFieldsTooLarge) }
            var line = bytes[lineStart..<newline]
            if line.last == cr { line = line.dropLast() }
            lineStart = newline + 1
            if line.isEmpty { break }
            if lines.count == maxHeaderLines + 1 { return .invalid(.headerFieldsTooLarge) }
            lines.append(line)
        }
        guard let requestLine = lines.first else { return .incomplete }
        switch head(requestLine: requestLine, headers: lines.dropFirst()) {
        case .success(let head): return .request(head, consumed: lineStart - base)
        case .failure(let refusal): return .invalid(refusal.status)
        }
    }

    private struct Refusal: Error { var status: HTTPStatus }

    private static func head(requestLine: ArraySlice<UInt8>, headers: ArraySlice<ArraySlice<UInt8>>) -> Result<HTTPRequestHead, Refusal> {
        let bad = Refusal(status: .badRequest)
        let parts = requestLine.split(separator: space, omittingEmptySubsequences: false)
        guard parts.count == 3, (1...32).contains(parts[0].count), parts[0].allSatisfy(isTokenByte),
            !parts[1].isEmpty, parts[1].allSatisfy({ $0 > 0x20 && $0 < 0x7F })
        else { return .failure(bad) }
        let minorVersion: Int
        switch Array(parts[2]) {
        case Array("HTTP/1.1".utf8): minorVersion = 1
        case Array("HTTP/1.0".utf8): minorVersion = 0
        case let v where v.count == 8 && v.starts(with: "HTTP/".utf8) && isDigit(v[5]) && v[6] == UInt8(ascii: ".") && isDigit(v[7]):
            return .failure(Refusal(status: .versionNotSupported))
        default: return .failure(bad)
        }
        guard let path = path(of: parts[1]) else { return .failure(bad) }

        var close = false, keepAlive = false, hasBody = false
        var contentLength: Int?
        for line in headers {
            // Folded lines (obs-fold) and whitespace before the colon are refused (RFC 9112 §5.1, §5.2).
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > line.startIndex,
                line[line.startIndex..<colon].allSatisfy(isTokenByte),
                line.allSatisfy({ $0 == tab || ($0 >= 0x20 && $0 != 0x7F) })
            else { return .failure(bad) }
            let name = String(decoding: line[line.startIndex..<colon], as: UTF8.self).lowercased()
            let value = trimmed(line[(colon + 1)...])
            switch name {
            case "connection":
                for option in value.split(separator: UInt8(ascii: ",")) {
                    switch String(decoding: trimmed(option), as: UTF8.self).lowercased() {
                    case "close": close = true
                    case "keep-alive": keepAlive = true
                    default: break
                    }
                }
            case "content-length":
                // Digits only, at most 18 of them (no overflow); a second, different value is refused (RFC 9112 §6.3).
                guard (1...18).contains(value.count), value.allSatisfy(isDigit),
                    let length = Int(String(decoding: value, as: UTF8.self)), contentLength == nil || contentLength == length
                else { return .failure(bad) }
                contentLength = length
                if length > 0 { hasBody = true }
            case "transfer-encoding":
                hasBody = true
            default:
                break
            }
        }
        let persistent = minorVersion == 1 ? !close : keepAlive && !close
        return .success(
            HTTPRequestHead(
                method: String(decoding: parts[0], as: UTF8.self), path: path,
                minorVersion: minorVersion, keepAlive: persistent, hasBody: hasBody))
    }

    /// The path of a request target, or nil when it is none of the forms a server takes.
    private static func path(of target: ArraySlice<UInt8>) -> String? {
        var rest = target
        if rest.first != UInt8(ascii: "/") {
            if rest.elementsEqual("*".utf8) { return "*" }
            // Absolute form: scheme "://" authority, then the path (or "/" when there is none).
            let text = String(decoding: rest, as: UTF8.self).lowercased()
            guard text.hasPrefix("http://") || text.hasPrefix("https://"),
                let slashes = rest.firstIndex(of: UInt8(ascii: "/"))
            else { return nil }
            let authority = rest[(slashes + 2)...]
            guard !authority.isEmpty else { return nil }
            guard let pathStart = authority.firstIndex(of: UInt8(ascii: "/")) else { return "/" }
            rest = rest[pathStart...]
        }
        if let end = rest.firstIndex(where: { $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") }) { rest = rest[..<end] }
        return String(decoding: rest, as: UTF8.self)
    }

    private static func trimmed(_ bytes: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        var b = bytes
        while let first = b.first, first == space || first == tab { b = b.dropFirst() }
        while let last = b.last, last == space || last == tab { b = b.dropLast() }
        return b
    }

    private static func isDigit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }

    /// RFC 9110 §5.6.2 tchar.
    private static func isTokenByte(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): return true
        default: return Array("!#$%&'*+-.^_`|~".utf8).contains(b)
        }
    }
}

/// Response heads and the scrape endpoint's routing.
public enum HTTPResponse {
    /// Prometheus text exposition format 0.0.4.
    public static let metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

    /// A complete response: status line, headers, and `body` unless `headOnly` (HEAD).
    public static func bytes(
        _ status: HTTPStatus, contentType: String = "text/plain; charset=utf-8", body: [UInt8],
        keepAlive: Bool, minorVersion: Int = 1, headOnly: Bool = false,
        extraHeaders: [(String, String)] = []
    ) -> [UInt8] {
        var head = "HTTP/1.1 \(status.rawValue) \(status.reason)\r\nContent-Type: \(contentType)\r\nContent-Length: \(body.count)\r\n"
        for (name, value) in extraHeaders { head += "\(name): \(value)\r\n" }
        // HTTP/1.1 is persistent unless told; an HTTP/1.0 client is told when it is.
        if !keepAlive { head += "Connection: close\r\n" } else if minorVersion == 0 { head += "Connection: keep-alive\r\n" }
        head += "\r\n"
        var out = Array(head.utf8)
        if !headOnly { out.append(contentsOf: body) }
        return out
    }

    /// The answer to `request`: `GET`/`HEAD /metrics` gets `metrics()` (called
    /// only then), other paths 404, other methods 405. `close` says whether
    /// the connection ends after it.
    public static func answer(_ request: HTTPRequestHead, metrics: () -> [UInt8]) -> (bytes: [UInt8], close: Bool) {
        let close = !request.keepAlive || request.hasBody
        let headOnly = request.method == "HEAD"
        guard request.method == "GET" || headOnly else {
            return (
                bytes(
                    .methodNotAllowed, body: Array("only GET and HEAD\n".utf8), keepAlive: !close,
                    minorVersion: request.minorVersion, extraHeaders: [("Allow", "GET, HEAD")]), close
            )
        }
        guard request.path == "/metrics" else {
            return (
                bytes(
                    .notFound, body: Array("not found: the metrics are at /metrics\n".utf8), keepAlive: !close,
                    minorVersion: request.minorVersion, headOnly: headOnly), close
            )
        }
        return (
            bytes(
                .ok, contentType: metricsContentType, body: metrics(), keepAlive: !close,
                minorVersion: request.minorVersion, headOnly: headOnly), close
        )
    }

    /// The answer to bytes that are no request (always closes).
    public static func refusal(_ status: HTTPStatus) -> [UInt8] {
        bytes(status, body: Array("\(status.rawValue) \(status.reason)\n".utf8), keepAlive: false)
    }
}
