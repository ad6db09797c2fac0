/// Scenario transcripts shared by the ordering and membership tests: a text of
/// blocks `command`, `----`, expected output lines, blank line. Lines starting
/// with `#` (and blank lines between blocks) are comments and are kept.
///
/// ``replay(_:execute:)`` runs every command in order and compares what it
/// prints with the expected lines; it also returns the text rewritten with the
/// actual output, which a test writes back when `CARILLON_REWRITE=1` is set
/// (then read the diff before committing it).
public enum TranscriptScript {
    /// A command whose output differs from the transcript.
    public struct Mismatch: Sendable, Hashable, CustomStringConvertible {
        public var command: String
        public var expected: [String]
        public var actual: [String]

        public var description: String {
            "\(command)\n  expected:\n" + expected.map { "    " + $0 }.joined(separator: "\n")
                + "\n  actual:\n" + actual.map { "    " + $0 }.joined(separator: "\n")
        }
    }

    /// Runs every command of `text` through `execute`, in order.
    public static func replay(_ text: String, execute: (String) -> [String]) -> (rewritten: String, mismatches: [Mismatch]) {
        var rewritten: [String] = []
        var mismatches: [Mismatch] = []
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)[...]
        while let line = lines.popFirst() {
            if line.isEmpty || line.hasPrefix("#") { rewritten.append(line); continue }
            let command = line
            var expected: [String] = []
            if lines.first == "----" {
                lines.removeFirst()
                while let next = lines.first, !next.isEmpty { expected.append(next); lines.removeFirst() }
            }
            let actual = execute(command)
            if actual != expected { mismatches.append(Mismatch(command: command, expected: expected, actual: actual)) }
            rewritten.append(command)
            rewritten.append("----")
            rewritten.append(contentsOf: actual)
            if lines.first == "" { lines.removeFirst() }
            rewritten.append("")
        }
        return (rewritten.joined(separator: "\n"), mismatches)
    }

    /// The `key=value` words of a command (after its first word).
    public static func options(_ words: [String]) -> [String: String] {
        var options: [String: String] = [:]
        for word in words.dropFirst() {
            let pair = word.split(separator: "=", maxSplits: 1).map(String.init)
            if pair.count == 2 { options[pair[0]] = pair[1] }
        }
        return options
    }
}
