import CarillonAuth
import Foundation
import Glibc
import Testing

/// Issue 12, defect 9 (keys): key files are private to their owner — read
/// only when nobody else can read or write them, written with mode 0600.
@Suite struct KeyFileTests {
    func mode(_ path: String) -> mode_t {
        var status = stat()
        #expect(stat(path, &status) == 0, "cannot stat \(path)")
        return status.st_mode & 0o7777
    }

    /// A scratch directory of this test's own, removed at the end.
    func scratch() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("carillon-keyfile-test-\(UInt64.random(in: 0...UInt64.max))").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        return path
    }

    @Test(arguments: [mode_t(0o644), 0o640, 0o604, 0o660, 0o602])
    func aKeyFileOthersCanReachIsRefusedWithTheModeAndTheFix(mode: mode_t) throws {
        let directory = try scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/bus.key"
        try FrameAuthenticator.generateHexKey().write(toFile: path, atomically: false, encoding: .utf8)
        #expect(chmod(path, mode) == 0)
        let error = #expect(throws: KeyFileError.self) { try KeyFile.load(path: path) }
        let text = error?.description ?? ""
        #expect(text.contains(path), "\(text)")
        #expect(text.contains(String(mode, radix: 8)), "\(text)")
        #expect(text.contains("chmod 600 \(path)"), "\(text)")
    }

    @Test func aPrivateKeyFileIsRead() throws {
        let directory = try scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/bus.key"
        try (String(repeating: "ab", count: 32) + "\n").write(toFile: path, atomically: false, encoding: .utf8)
        for allowed in [mode_t(0o600), 0o400] {
            #expect(chmod(path, allowed) == 0)
            _ = try KeyFile.load(path: path)
        }
        // Missing and malformed files say which file.
        #expect(throws: KeyFileError.self) { try KeyFile.load(path: directory + "/none.key") }
        try "not a key".write(toFile: directory + "/bad.key", atomically: false, encoding: .utf8)
        #expect(chmod(directory + "/bad.key", 0o600) == 0)
        let bad = #expect(throws: KeyFileError.self) { try KeyFile.load(path: directory + "/bad.key") }
        #expect(bad?.description.contains("bad.key") == true)
    }

    /// Written keys are 0600 whatever the umask, and an existing file is never overwritten.
    @Test func writtenKeysAreMode0600AndNeverReplaceAFile() throws {
        let directory = try scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/bus.key"
        let key = FrameAuthenticator.generateHexKey()
        try KeyFile.write(hexKey: key, to: path)
        #expect(mode(path) == 0o600)
        _ = try KeyFile.load(path: path)
        #expect(throws: KeyFileError.self) { try KeyFile.write(hexKey: key, to: path) }
    }

    /// The demo's directory: private (0700) and fresh on every call.
    @Test func privateDirectoriesAreMode0700AndFresh() throws {
        let first = try KeyFile.makePrivateDirectory(prefix: "carillon-test-")
        let second = try KeyFile.makePrivateDirectory(prefix: "carillon-test-")
        defer { for d in [first, second] { try? FileManager.default.removeItem(atPath: d) } }
        #expect(first != second)
        #expect(mode(first) == 0o700 && mode(second) == 0o700)
    }
}
