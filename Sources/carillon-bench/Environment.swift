import CarillonBench
import Foundation
import Glibc

extension BenchEnvironment {
    /// This machine, this build, this command line.
    static func current() -> BenchEnvironment {
        var name = utsname()
        uname(&name)
        let kernel = withUnsafeBytes(of: name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        #if DEBUG
            let mode = "debug"
        #else
            let mode = "release"
        #endif
        let commit = try? run(["git", "-C", FileManager.default.currentDirectoryPath, "describe", "--always", "--dirty", "--abbrev=7"])
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let formatter = ISO8601DateFormatter()
        let arguments = CommandLine.arguments
        let command = (["carillon-bench"] + arguments.dropFirst()).joined(separator: " ")
        return BenchEnvironment(
            date: formatter.string(from: Date()), cpuCount: Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))),
            kernel: kernel, buildMode: mode, commit: commit, command: command)
    }
}
