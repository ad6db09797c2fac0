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

    @Test(arguments: files)
    func rejectedWithTheExpectedError(file: String) throws {
        let text = try String(contentsOf: Self.directory.appendingPathComponent(file), encoding: .utf8)
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let expectation = try #require(lines.first?.split(separator: ":").last).trimmingCharacters(in: .whitespaces)
        lines.removeFirst()
        let hex = lines.joined()
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            bytes.append(try #require(UInt8(hex[index..<next], radix: 16)))
            index = next
        }
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
