import Dispatch
import Foundation
import Synchronization

/// A command that failed, with what it printed: the bench's errors say what
/// ran and why it stopped.
struct CommandFailure: Error, CustomStringConvertible {
    var command: [String]
    var status: Int32
    var output: String
    var description: String {
        "`\(command.joined(separator: " "))` exited with status \(status)\(output.isEmpty ? "" : ":\n\(output)")"
    }
}

/// A plain failure message for the user.
struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Work to undo on every exit path: namespaces to delete, daemons and agents
/// to kill. Runs in reverse order, once, also on SIGINT/SIGTERM.
enum Cleanup {
    private static let actions = Mutex<[(Int, @Sendable () -> Void)]>([])
    private static let nextToken = Atomic<Int>(0)
    nonisolated(unsafe) private static var sources: [DispatchSourceSignal] = []

    @discardableResult
    static func register(_ action: @escaping @Sendable () -> Void) -> Int {
        let token = nextToken.add(1, ordering: .relaxed).newValue
        actions.withLock { $0.append((token, action)) }
        return token
    }

    /// Runs and forgets one registered action.
    static func run(_ token: Int) {
        let action = actions.withLock { list -> (@Sendable () -> Void)? in
            guard let index = list.firstIndex(where: { $0.0 == token }) else { return nil }
            return list.remove(at: index).1
        }
        action?()
    }

    static func runAll() {
        let all = actions.withLock { list in
            defer { list.removeAll() }; return list
        }
        for (_, action) in all.reversed() { action() }
    }

    /// On SIGINT/SIGTERM: clean up, then exit 130.
    static func installSignalHandlers() {
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                FileHandle.standardError.write(Data("\ncarillon-bench: interrupted, cleaning up\n".utf8))
                runAll()
                exit(130)
            }
            source.resume()
            sources.append(source)
        }
    }
}

/// Finds an executable on PATH (plus the sbin directories `ip` and `tc` live in).
func which(_ name: String) -> String? {
    let path = (ProcessInfo.processInfo.environment["PATH"] ?? "") + ":/usr/sbin:/sbin:/usr/bin:/bin"
    for directory in path.split(separator: ":") {
        let candidate = "\(directory)/\(name)"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
}

/// Runs a command to completion and returns its standard output; throws with
/// its output when it fails.
@discardableResult
func run(_ argv: [String], input: String? = nil) throws -> String {
    guard let executable = argv.first.flatMap({ $0.hasPrefix("/") ? $0 : which($0) }) else {
        throw BenchError("`\(argv.first ?? "")` not found on PATH")
    }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = Array(argv.dropFirst())
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    let stdin = Pipe()
    if input != nil { process.standardInput = stdin }
    try process.run()
    if let input {
        stdin.fileHandleForWriting.write(Data(input.utf8))
        try? stdin.fileHandleForWriting.close()
    }
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let text = String(decoding: data, as: UTF8.self)
    guard process.terminationStatus == 0 else { throw CommandFailure(command: argv, status: process.terminationStatus, output: text) }
    return text
}

/// A child process writing its output to files, ended with SIGKILL on every exit path.
final class Child: @unchecked Sendable {
    let process = Process()
    let argv: [String]
    let exited = DispatchSemaphore(value: 0)
    let stderrPath: String
    private var cleanupToken = 0

    init(_ argv: [String], stdout: String? = nil, stderr: String) throws {
        guard let executable = argv.first.flatMap({ $0.hasPrefix("/") ? $0 : which($0) }) else {
            throw BenchError("`\(argv.first ?? "")` not found on PATH")
        }
        self.argv = argv
        stderrPath = stderr
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = Array(argv.dropFirst())
        FileManager.default.createFile(atPath: stderr, contents: nil)
        process.standardError = FileHandle(forWritingAtPath: stderr)
        if let stdout {
            FileManager.default.createFile(atPath: stdout, contents: nil)
            process.standardOutput = FileHandle(forWritingAtPath: stdout)
        } else {
            process.standardOutput = FileHandle.nullDevice
        }
        process.terminationHandler = { [exited] _ in exited.signal() }
        try process.run()
        let pid = process.processIdentifier
        cleanupToken = Cleanup.register { [process] in if process.isRunning { kill(pid, SIGKILL) } }
    }

    /// Waits for the child to exit, at most `seconds`; kills it when the time is up.
    /// Returns its status (nil when it had to be killed).
    func wait(seconds: Double) -> Int32? {
        defer { Cleanup.run(cleanupToken) }
        if exited.wait(timeout: .now() + seconds) == .success { return process.terminationStatus }
        kill(process.processIdentifier, SIGKILL)
        _ = exited.wait(timeout: .now() + 5)
        return nil
    }

    /// The child's process id (in namespaces `ip netns exec` execs the command, so it is the command's).
    var pid: Int32 { process.processIdentifier }

    /// Asks the child to stop (SIGTERM) if it still runs; ``wait(seconds:)`` for it after.
    func terminate() {
        if process.isRunning { kill(process.processIdentifier, SIGTERM) }
    }

    /// Ends the child now if it still runs (a no-op after ``wait(seconds:)`` saw it exit).
    func kill9() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            _ = exited.wait(timeout: .now() + 5)
        }
        Cleanup.run(cleanupToken)
    }

    /// The last lines of the child's standard error, for error messages.
    var stderrTail: String {
        let text = (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").suffix(8).joined(separator: "\n")
    }
}
