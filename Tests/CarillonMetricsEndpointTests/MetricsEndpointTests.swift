import CarillonMetricsEndpoint
import CarillonProcessStats
import CarillonTransport
import Glibc
import Metrics
import Testing

/// The request-head parser on fixed bytes: what it accepts, and the status
/// it answers everything else with.
@Suite struct HTTPRequestParserTests {
    func parse(_ text: String) -> HTTPParseResult { HTTPRequestParser.parse(Array(text.utf8)[...]) }

    @Test func aScrapersRequest() {
        let text = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9464\r\nAccept: text/plain;version=0.0.4\r\nUser-Agent: Prometheus/2.53.0\r\n\r\n"
        #expect(
            parse(text)
                == .request(
                    HTTPRequestHead(method: "GET", path: "/metrics", minorVersion: 1, keepAlive: true, hasBody: false),
                    consumed: text.utf8.count))
    }

    @Test func persistenceByVersionAndConnectionHeader() {
        func keepAlive(_ text: String) -> Bool? {
            if case .request(let head, _) = parse(text) { return head.keepAlive }
            return nil
        }
        #expect(keepAlive("GET / HTTP/1.1\r\n\r\n") == true)
        #expect(keepAlive("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n") == false)
        #expect(keepAlive("GET / HTTP/1.0\r\n\r\n") == false)
        #expect(keepAlive("GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n") == true)
        #expect(keepAlive("GET / HTTP/1.1\nconnection: upgrade, close\n\n") == false)  // bare LF line ends
    }

    @Test func pipelinedRequestsAreTakenOneAtATime() {
        let first = "\r\nGET /metrics?x=1 HTTP/1.1\r\n\r\n"  // an empty line before the request line is skipped
        guard case .request(let head, let consumed) = parse(first + "HEAD /other HTTP/1.1\r\n\r\n") else {
            Issue.record("no request")
            return
        }
        #expect(head.path == "/metrics" && consumed == first.utf8.count)
    }

    @Test func aHeadStillArrivingIsIncomplete() {
        #expect(parse("") == .incomplete)
        #expect(parse("GET /metrics HTTP/1.1\r\nHost: a") == .incomplete)
        #expect(parse("GET /metrics HTTP/1.1\r\n") == .incomplete)
    }

    @Test func targets() {
        func path(_ target: String) -> String? {
            if case .request(let head, _) = parse("GET \(target) HTTP/1.1\r\n\r\n") { return head.path }
            return nil
        }
        #expect(path("http://127.0.0.1:9464/metrics") == "/metrics")
        #expect(path("HTTP://host") == "/")
        #expect(path("/a#frag") == "/a")
        #expect(path("*") == "*")
        #expect(path("metrics") == nil)
        #expect(path("http://") == nil)
    }

    @Test func whatIsNoRequestGetsAStatus() {
        #expect(parse("BLAH\r\n\r\n") == .invalid(.badRequest))
        #expect(parse("GET /metrics\r\n\r\n") == .invalid(.badRequest))  // HTTP/0.9
        #expect(parse("GET  /metrics HTTP/1.1\r\n\r\n") == .invalid(.badRequest))  // two spaces
        #expect(parse("GET /metrics HTTP/2.0\r\n\r\n") == .invalid(.versionNotSupported))
        #expect(parse("GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n") == .invalid(.badRequest))  // space before the colon
        #expect(parse("GET /metrics HTTP/1.1\r\nA: b\r\n folded\r\n\r\n") == .invalid(.badRequest))
        #expect(parse("GET /metrics HTTP/1.1\r\nA: b\u{1}c\r\n\r\n") == .invalid(.badRequest))
        #expect(parse("GET /metrics HTTP/1.1\r\nContent-Length: -1\r\n\r\n") == .invalid(.badRequest))
        #expect(parse("GET /metrics HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n") == .invalid(.badRequest))
        #expect(parse("GET /metrics HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n") == .invalid(.badRequest))
        #expect(HTTPRequestParser.parse([UInt8](repeating: 0xFF, count: 100)[...]) == .incomplete)
        #expect(HTTPRequestParser.parse([UInt8](repeating: 0, count: 10)[...] + [10, 10]) == .invalid(.badRequest))
    }

    @Test func theHeadIsBounded() {
        let long = "GET /metrics HTTP/1.1\r\nX: " + String(repeating: "a", count: HTTPRequestParser.maxHeadBytes) + "\r\n\r\n"
        #expect(parse(long) == .invalid(.headerFieldsTooLarge))
        #expect(parse(String(repeating: "a", count: HTTPRequestParser.maxHeadBytes)) == .invalid(.headerFieldsTooLarge))
        let many = "GET / HTTP/1.1\r\n" + String(repeating: "A: b\r\n", count: HTTPRequestParser.maxHeaderLines + 1) + "\r\n"
        #expect(parse(many) == .invalid(.headerFieldsTooLarge))
    }

    @Test func aRequestWithABodyIsAnsweredAndClosed() {
        guard case .request(let head, _) = parse("GET /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc") else {
            Issue.record("no request")
            return
        }
        #expect(head.hasBody)
        #expect(HTTPResponse.answer(head, metrics: { [] }).close)
    }
}

/// A responder on an ephemeral loopback port, scraped over raw sockets.
@Suite struct MetricsResponderTests {
    /// Sends `request` on a fresh connection and reads until the server
    /// closes (bounded: 5 s without a byte fails the read).
    func exchange(_ port: UInt16, _ request: [UInt8], halfClose: Bool = false) throws -> String {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try #require(fd >= 0)
        defer { close(fd) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = UDPEndpoint(address: UInt32(0x7F00_0001).bigEndian, port: port).socketAddress
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        try #require(connected == 0)
        var sent = 0
        while sent < request.count {
            let n = request.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { break }  // the server may close early on a bad request: read what it said
            sent += n
        }
        if halfClose { shutdown(fd, Int32(SHUT_WR)) }
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 { received += chunk[0..<n]; continue }
            if n < 0, errno == EINTR { continue }
            try #require(n == 0 || errno == ECONNRESET, "no end of stream within 5 s (errno \(errno))")
            break
        }
        return String(decoding: received, as: UTF8.self)
    }

    /// A counter made the way the runtime's MemberMetrics makes them, through swift-metrics.
    func export(nakCount: Int64) -> PrometheusExport {
        let export = PrometheusExport()
        Counter(label: "carillon_naks_sent", dimensions: [("node", "2")], factory: export.factory).increment(by: nakCount)
        Counter(label: "carillon_messages_delivered", dimensions: [("node", "2")], factory: export.factory).increment(by: 1)
        return export
    }

    func start(_ export: PrometheusExport, limits: MetricsResponder.Limits = .init()) throws -> MetricsResponder {
        try MetricsResponder(listen: UDPEndpoint("127.0.0.1:0")!, limits: limits) { export.scrape() }
    }

    @Test func aScrapeShowsTheCountersAndTheProcess() throws {
        let responder = try start(export(nakCount: 42))
        defer { responder.stop() }
        #expect(responder.address.port != 0)
        let text = try exchange(responder.address.port, Array("GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".utf8))
        let (head, body) = try split(text)
        #expect(head.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"))
        #expect(head.contains("\r\nContent-Length: \(body.utf8.count)\r\n"))
        #expect(head.contains("\r\nConnection: close\r\n"))
        let lines = body.split(separator: "\n").map(String.init)
        #expect(lines.contains("# TYPE carillon_naks_sent counter"))
        #expect(lines.contains(#"carillon_naks_sent{node="2"} 42"#))
        #expect(lines.contains(#"carillon_messages_delivered{node="2"} 1"#))
        for name in PrometheusExport.processMetricNames {
            #expect(lines.contains("# TYPE \(name) counter"))
            #expect(lines.contains { $0.hasPrefix(name + " ") })
        }
        // This test process has run and waited: its CPU time and wake-ups are above zero.
        let switches = lines.first { $0.hasPrefix("carillon_process_voluntary_context_switches_total ") }
        #expect(switches.flatMap { Int($0.split(separator: " ")[1]) }.map { $0 > 0 } == true)
    }

    @Test func keepAliveAndPipelinedRequestsAreAnsweredInOrder() throws {
        let responder = try start(export(nakCount: 7))
        defer { responder.stop() }
        let requests = "GET /metrics HTTP/1.1\r\n\r\nHEAD /metrics HTTP/1.1\r\n\r\nGET /nothing HTTP/1.1\r\nConnection: close\r\n\r\n"
        let text = try exchange(responder.address.port, Array(requests.utf8))
        // Each answer's status line (a body ends in "\n", so the next answer follows it directly).
        let statuses = text.components(separatedBy: "HTTP/1.1 ").dropFirst().map { String($0.prefix(3)) }
        #expect(statuses == ["200", "200", "404"])
        // GET has the body, HEAD only its head.
        #expect(text.components(separatedBy: #"carillon_naks_sent{node="2"} 7"#).count == 2)
    }

    @Test func badRequestsGetA4xxAndTheResponderServesOn() throws {
        var limits = MetricsResponder.Limits()
        limits.lingerNanos = 200_000_000  // these clients never half-close: the responder closes after its linger
        let responder = try start(export(nakCount: 3), limits: limits)
        defer { responder.stop() }
        let port = responder.address.port
        #expect(try exchange(port, Array("BLAH\r\n\r\n".utf8)).hasPrefix("HTTP/1.1 400 Bad Request\r\n"))
        #expect(try exchange(port, Array("POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi".utf8)).hasPrefix("HTTP/1.1 405 "))
        #expect(try exchange(port, Array("GET /metrics HTTP/3.0\r\n\r\n".utf8)).hasPrefix("HTTP/1.1 505 "))
        // Larger than any head: refused once the bound is reached, not buffered.
        let flood = [UInt8](repeating: UInt8(ascii: "A"), count: 4 * HTTPRequestParser.maxHeadBytes)
        #expect(try exchange(port, flood).hasPrefix("HTTP/1.1 431 "))
        // Binary noise, and a client that sends half a request and goes away.
        #expect(try exchange(port, [0x16, 0x03, 0x01, 0x00, 0xFF, 0x0A, 0x0D, 0x0A, 0x0A]).hasPrefix("HTTP/1.1 400 "))
        #expect(try exchange(port, Array("GET /met".utf8), halfClose: true) == "")
        let after = try exchange(port, Array("GET /metrics HTTP/1.0\r\n\r\n".utf8))
        #expect(after.hasPrefix("HTTP/1.1 200 OK\r\n") && after.contains(#"carillon_naks_sent{node="2"} 3"#))
    }

    @Test func aSlowRequestTimesOutWith408() throws {
        var limits = MetricsResponder.Limits()
        limits.requestNanos = 200_000_000
        let responder = try start(export(nakCount: 1), limits: limits)
        defer { responder.stop() }
        // Half a head and then nothing: the responder gives up after requestNanos.
        #expect(try exchange(responder.address.port, Array("GET /metrics HTTP/1.1\r\n".utf8)).hasPrefix("HTTP/1.1 408 "))
    }

    @Test func aPortInUseIsAClearError() throws {
        let responder = try start(export(nakCount: 0))
        defer { responder.stop() }
        let error = #expect(throws: MetricsEndpointError.self) {
            _ = try MetricsResponder(listen: responder.address) { [] }
        }
        #expect(error?.description.contains("\(responder.address)") == true)
        #expect(error?.description.contains("in use") == true)
    }

    func split(_ response: String) throws -> (head: String, body: String) {
        let parts = response.components(separatedBy: "\r\n\r\n")
        try #require(parts.count >= 2)
        return (parts[0] + "\r\n", parts.dropFirst().joined(separator: "\r\n\r\n"))
    }
}

/// The process counters' source: totals that a thread's exit does not lower.
@Suite struct ProcessUsageTests {
    @Test func aThreadThatExitedStillCounts() throws {
        let before = try #require(ProcessUsage.current())
        // A thread that waits (voluntary switches) 20 times, then ends.
        var thread = pthread_t()
        let started = pthread_create(
            &thread, nil,
            { _ in
                for _ in 0..<20 { usleep(100) }
                return nil
            }, nil)
        try #require(started == 0)
        pthread_join(thread, nil)
        let after = try #require(ProcessUsage.current())
        #expect(after.voluntarySwitches >= before.voluntarySwitches + 20)
        #expect(after.cpuSeconds >= before.cpuSeconds)
        #expect(after.involuntarySwitches >= before.involuntarySwitches)
    }
}
