import Foundation
import Testing
import CarillonWire

/// Replays the malformed-frame corpus: each `Corpus/*.hex` file holds one
/// datagram in hex and, on its first line, `# expect: <WireError case>`.
/// Inputs the fuzzer finds go here too, so they stay fixed.
@Suite("Malformed-frame corpus")
struct CorpusTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Corpus")

    static var files: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [])
            .filter { $0.hasSuffix(".hex") }.sorted()
    }

    @Test func corpusIsPresent() {
        #expect(Self.files.count >= 30)
    }

    /// The fuzzer's seeds (`Fuzz/Seeds`) must stay valid frames, or the fuzzer
    /// starts from nothing but rejects.
    @Test func fuzzSeedsDecode() throws {
        let seeds = Self.directory.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fuzz/Seeds")
        let files = try FileManager.default.contentsOfDirectory(atPath: seeds.path).filter { $0.hasSuffix(".hex") }
        #expect(files.count >= 5)
        for file in files {
            let bytes = try Self.bytes(of: seeds.appendingPathComponent(file))
            let decoded: Bool = bytes.withUnsafeBytes { (try? FrameView.decode($0)) != nil }
            #expect(decoded, "\(file)")
        }
    }

    static func bytes(of url: URL) throws -> [UInt8] {
        let text = try String(contentsOf: url, encoding: .utf8)
        let hex = text.split(separator: "\n").filter { !$0.hasPrefix("#") }.joined()
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            bytes.append(try #require(UInt8(hex[index..<next], radix: 16)))
            index = next
        }
        return bytes
    }

    @Test(arguments: files)
    func rejectedWithTheExpectedError(file: String) throws {
        let text = try String(contentsOf: Self.directory.appendingPathComponent(file), encoding: .utf8)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let expectation = try #require(lines.first?.split(separator: ":").last).trimmingCharacters(in: .whitespaces)
        let bytes = try Self.bytes(of: Self.directory.appendingPathComponent(file))
        let outcome: Result<FrameHeader, WireError> = bytes.withUnsafeBytes { raw in
            do throws(WireError) { return .success(try FrameView.decode(raw).header) } catch { return .failure(error) }
        }
        switch outcome {
        case .success:
            Issue.record("\(file) decoded, expected \(expectation)")
        case .failure(let error):
            let name = String(describing: error).prefix { $0 != "(" }
            #expect(String(name) == expectation, "\(file)")
        }
    }
}
