import CarillonBench
import Foundation
import Testing

/// HTTP/1.1 framing and etcd's v3 JSON gateway replies, from canned bytes
/// (responses as etcd 3.4.23 sent them; no network).
@Suite struct EtcdGatewayTests {
    static let grant = """
        HTTP/1.1 200 OK\r
        Access-Control-Allow-Origin: *\r
        Content-Type: application/json\r
        Grpc-Metadata-Content-Type: application/grpc\r
        Date: Wed, 02 Dec 2026 13:54:15 GMT\r
        Content-Length: 151\r
        \r
        {"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"1","raft_term":"2"},"ID":"4111120392113699846","TTL":"2"}
        """

    /// A gateway error: chunked, with a trailer field after the last chunk.
    static let leaseNotFound =
        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nTrailer: Grpc-Trailer-Content-Type\r\n"
        + "Transfer-Encoding: chunked\r\n\r\n"
        + "6c\r\n{\"error\":\"etcdserver: requested lease not found\",\"message\":\"etcdserver: requested lease not found\",\"code\":2}\r\n"
        + "0\r\nGrpc-Trailer-Content-Type: application/grpc\r\n\r\n"

    static let range = """
        HTTP/1.1 200 OK\r
        Content-Type: application/json\r
        Content-Length: 219\r
        \r
        {"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"3","raft_term":"2"},"kvs":[{"key":"Zm9v","create_revision":"3","mod_revision":"3","version":"1","value":"YmFy"}],"count":"1"}
        """

    @Test func contentLengthResponse() throws {
        var parser = HTTPResponseParser()
        parser.append(Array(Self.grant.utf8))
        let response = try #require(try parser.next())
        #expect(response.status == 200)
        #expect(response.reason == "OK")
        #expect(response.headers["content-type"] == "application/json")
        #expect(response.body.count == 151)
        let object = try EtcdGateway.object(response)
        #expect(EtcdGateway.field(["ID"], in: object) == "4111120392113699846")
        #expect(EtcdGateway.field(["TTL"], in: object) == "2")
        #expect(EtcdGateway.field(["header", "revision"], in: object) == "1")
        #expect(EtcdGateway.field(["header"], in: object) == nil)
        #expect(EtcdGateway.field(["missing"], in: object) == nil)
        #expect(try parser.next() == nil)
        #expect(parser.pendingByteCount == 0)
    }

    @Test func chunkedErrorWithTrailerBecomesAnError() throws {
        var parser = HTTPResponseParser()
        parser.append(Array(Self.leaseNotFound.utf8))
        let response = try #require(try parser.next())
        #expect(response.status == 500)
        #expect(response.text.hasPrefix("{\"error\":\"etcdserver: requested lease not found\""))
        #expect(response.headers["grpc-trailer-content-type"] == "application/grpc")
        #expect(throws: EtcdGatewayError(status: 500, message: "etcdserver: requested lease not found")) { try EtcdGateway.object(response) }
    }

    @Test func responsesArrivingByteByByteOnOneConnection() throws {
        // Three responses back to back (keep-alive), fed one byte at a time:
        // nil until each is complete, then exactly that response.
        let stream = Array((Self.grant + Self.leaseNotFound + Self.range).utf8)
        var parser = HTTPResponseParser()
        var responses: [HTTPResponse] = []
        for byte in stream {
            parser.append([byte])
            while let response = try parser.next() { responses.append(response) }
        }
        #expect(responses.map(\.status) == [200, 500, 200])
        let object = try EtcdGateway.object(responses[2])
        #expect(EtcdGateway.field(["kvs", "0", "value"], in: object).flatMap(EtcdGateway.decodeBase64) == "bar")
        #expect(EtcdGateway.field(["count"], in: object) == "1")
        #expect(EtcdGateway.field(["kvs", "1", "value"], in: object) == nil)
        #expect(parser.pendingByteCount == 0)
    }

    @Test func healthAndNumbers() throws {
        var parser = HTTPResponseParser()
        parser.append(Array("HTTP/1.1 200 OK\r\nContent-Length: 17\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{\"health\":\"true\"}".utf8))
        let health = try EtcdGateway.object(#require(try parser.next()))
        #expect(EtcdGateway.field(["health"], in: health) == "true")
        parser.append(Array("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{\"code\":14}\n".utf8))
        #expect(EtcdGateway.field(["code"], in: try EtcdGateway.object(#require(try parser.next()))) == "14")
    }

    @Test func noContentAndMalformedResponses() throws {
        var parser = HTTPResponseParser()
        parser.append(Array("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n".utf8))
        #expect(try parser.next()?.status == 204)

        var noLength = HTTPResponseParser()
        noLength.append(Array("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello".utf8))
        #expect(throws: HTTPParseError.noLength(status: 200)) { try noLength.next() }

        var notHTTP = HTTPResponseParser()
        notHTTP.append(Array("SSH-2.0-OpenSSH_9.2\r\n\r\n".utf8))
        #expect(throws: HTTPParseError.badStatusLine("SSH-2.0-OpenSSH_9.2")) { try notHTTP.next() }

        var badChunk = HTTPResponseParser()
        badChunk.append(Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".utf8))
        #expect(throws: HTTPParseError.badChunkSize("zz")) { try badChunk.next() }
    }

    @Test func requestBodies() throws {
        #expect(EtcdGateway.leaseGrantBody(ttlSeconds: 60) == "{\"TTL\":60}")
        #expect(EtcdGateway.lockBody(name: "l1", lease: "4111120392113699849") == "{\"name\":\"bDE=\",\"lease\":\"4111120392113699849\"}")
        #expect(EtcdGateway.unlockBody(key: "bDEvMzkw") == "{\"key\":\"bDEvMzkw\"}")
        #expect(EtcdGateway.putBody(key: "foo", value: "bar") == "{\"key\":\"Zm9v\",\"value\":\"YmFy\"}")
        #expect(EtcdGateway.rangeBody(key: "foo") == "{\"key\":\"Zm9v\"}")
        #expect(EtcdGateway.rangeBody(key: "foo", serializable: true) == "{\"key\":\"Zm9v\",\"serializable\":true}")
        // The range of every key under "mylock/" ends at "mylock0".
        #expect(EtcdGateway.prefixRangeEnd("mylock/") == Array("mylock0".utf8))
        #expect(EtcdGateway.countPrefixBody("mylock/") == "{\"key\":\"bXlsb2NrLw==\",\"range_end\":\"bXlsb2NrMA==\",\"count_only\":true}")
        // Every body is JSON.
        for body in [EtcdGateway.lockBody(name: "a", lease: "1"), EtcdGateway.countPrefixBody("p/"), EtcdGateway.leaseTimeToLiveBody(lease: "7")] {
            #expect((try? JSONSerialization.jsonObject(with: Data(body.utf8))) != nil)
        }
    }
}
