import ArgumentParser
import CarillonVerify
import Foundation

/// Checks the logs of several `carillon node --log` members against each other:
/// the same views at the same points of the stream, the same messages in the
/// same order within each view, correct transferred state, no duplicates.
struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check that members' delivery logs agree: views, order within each view, transferred state.",
        discussion: """
            Reads logs written by `carillon node --log` (a killed member's log may end anywhere; an empty \
            log, left by a joiner that never joined, counts as no view and no deliveries) and checks:
              • every member that installed view E did so with the same members and the same state \
            (count and digest of everything delivered before it);
              • a member that joined at view E received exactly that state;
              • members that went through all of view E delivered the same messages in the same order in it;
              • a member whose log ends inside view E delivered a prefix of it (a member left out of the \
            view may have delivered messages the others trimmed, as agreed delivery allows; its other \
            messages must still come in the same order);
              • no member delivered a message twice, and each sender's messages come in increasing order.
            Prints a line per view with how many members installed it and how far apart (first to last, ms).
            Exit status 1 on any disagreement.

            Examples:
              carillon verify h0.log h1.log h2.log h3.log h4.log
              carillon verify --quiet /tmp/run/*.log
            """)

    @Argument(help: "Logs to compare.") var logs: [String]
    @Flag(help: "Print only problems and the verdict.") var quiet = false

    func validate() throws {
        if logs.isEmpty { throw ValidationError("give at least one log") }
    }

    func run() throws {
        var parsed: [MemberLog] = []
        for path in logs {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw ValidationError("cannot read \(path)")
            }
            do { parsed.append(try MemberLog(name: URL(fileURLWithPath: path).lastPathComponent, text: text)) } catch {
                throw ValidationError("\(path): \(error)")
            }
        }
        let result = LogComparison(logs: parsed).check()
        // An empty log is a member that installed no view and delivered
        // nothing (a joiner that never joined): said, then checked as such.
        for log in parsed where log.isEmpty {
            print("note: \(log.name) is empty: that member installed no view and delivered nothing (a joiner that never joined?)")
        }
        if !quiet { for line in result.summary { print(line) } }
        for problem in result.problems { print("PROBLEM: \(problem)") }
        let messages = parsed.reduce(0) { $0 + $1.messageCount }
        if result.problems.isEmpty {
            print("verify: OK — \(parsed.count) logs, \(result.epochs) views, \(messages) deliveries agree")
        } else {
            print("verify: FAILED — \(result.problems.count) problem(s)")
            throw ExitCode(1)
        }
    }
}
