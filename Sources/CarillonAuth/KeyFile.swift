import Glibc

/// Cluster key files: the one place that reads and writes them, so every
/// tool (`carillon node`, `carillon demo`, `carillon keygen`, `carillon-tap
/// --key-file`, `carillon-bench`) keeps keys private the same way.
///
/// A key file must be reachable by its owner only: one that group or others
/// may read (or write) is refused, with the file, its mode and the fix, as
/// ssh refuses a private key. Keys are written with mode 0600 whatever the
/// umask, and never over an existing file.
///
/// ```swift
/// try KeyFile.write(hexKey: FrameAuthenticator.generateHexKey(), to: "bus.key")
/// let key = try KeyFile.load(path: "bus.key")
/// ```
public enum KeyFile {
    /// Permission bits a key file must not have: any access for group or others.
    public static let forbiddenBits: mode_t = 0o077

    /// Reads a cluster key (64 hexadecimal digits) from `path`.
    ///
    /// The mode is checked on the opened file (`fstat`), so the file that is
    /// checked is the file that is read.
    /// - Throws: ``KeyFileError`` naming the file: it cannot be opened, group
    ///   or others can reach it (the message gives its mode and `chmod 600`),
    ///   or it does not hold a key.
    public static func load(path: String) throws(KeyFileError) -> FrameAuthenticator {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw KeyFileError(path: path, problem: .unreadable(errno)) }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw KeyFileError(path: path, problem: .unreadable(errno)) }
        guard status.st_mode & S_IFMT == S_IFREG else { throw KeyFileError(path: path, problem: .notARegularFile) }
        let mode = status.st_mode & 0o7777
        guard mode & forbiddenBits == 0 else { throw KeyFileError(path: path, problem: .tooOpen(mode: mode)) }
        // A key file is 64 digits and a newline or so; 4 KiB is plenty.
        var bytes = [UInt8](repeating: 0, count: 4_096)
        var count = 0
        while count < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(descriptor, $0.baseAddress! + count, $0.count - count) }
            if n < 0, errno == EINTR { continue }
            guard n >= 0 else { throw KeyFileError(path: path, problem: .unreadable(errno)) }
            if n == 0 { break }
            count += n
        }
        do { return try FrameAuthenticator(hexKey: String(decoding: bytes[..<count], as: UTF8.self)) } catch {
            throw KeyFileError(path: path, problem: .badKey(error))
        }
    }

    /// Writes `hexKey` and a newline to a new file at `path`, created with
    /// mode 0600 (`O_CREAT | O_EXCL`: the umask cannot widen it, and an
    /// existing file — perhaps another cluster's key — is never replaced).
    public static func write(hexKey: String, to path: String) throws(KeyFileError) {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw KeyFileError(path: path, problem: .cannotCreate(errno)) }
        var failure: Int32 = 0
        let bytes = Array((hexKey + "\n").utf8)
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress! + written, $0.count - written) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { failure = errno; break }
            written += n
        }
        // umask can only clear bits; fchmod makes 0600 exact even if it was 0.
        if failure == 0, fchmod(descriptor, 0o600) != 0 { failure = errno }
        if close(descriptor) != 0, failure == 0 { failure = errno }
        if failure != 0 {
            unlink(path)
            throw KeyFileError(path: path, problem: .cannotCreate(failure))
        }
    }

    /// Creates a fresh directory only its owner can enter (mode 0700, `mkdtemp`)
    /// under `$TMPDIR` (or /tmp), named `prefix` and six random characters.
    public static func makePrivateDirectory(prefix: String) throws(KeyFileError) -> String {
        var base = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
        if base.isEmpty { base = "/tmp" }
        while base.count > 1, base.hasSuffix("/") { base.removeLast() }
        var template = Array("\(base)/\(prefix)XXXXXX".utf8CString)
        let created = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        guard created != nil else {
            throw KeyFileError(path: "\(base)/\(prefix)XXXXXX", problem: .cannotCreate(errno))
        }
        return String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// Why a key file cannot be used; the description names the file and the fix.
public struct KeyFileError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Problem: Sendable, Hashable {
        /// `open`, `fstat` or `read` failed with this `errno`.
        case unreadable(Int32)
        case notARegularFile
        /// Group or others may read or write it; `mode` is its permission bits.
        case tooOpen(mode: mode_t)
        case badKey(AuthenticationError)
        /// Creating or writing the file failed with this `errno` (`EEXIST`: it exists).
        case cannotCreate(Int32)
    }

    public var path: String
    public var problem: Problem

    public init(path: String, problem: Problem) {
        self.path = path
        self.problem = problem
    }

    public var description: String {
        switch problem {
        case .unreadable(let code):
            return "key file \(path) cannot be read: \(String(cString: strerror(code)))"
        case .notARegularFile:
            return "key file \(path) is not a regular file"
        case .tooOpen(let mode):
            let octal = String(mode, radix: 8)
            return "key file \(path) has mode 0\(octal): group or others can reach it, so the cluster key is not secret; "
                + "run `chmod 600 \(path)` (owner only) and start again"
        case .badKey(let error):
            return "key file \(path): \(error)"
        case .cannotCreate(let code) where code == EEXIST:
            return "key file \(path) already exists: not replaced (remove it first, or choose another path)"
        case .cannotCreate(let code):
            return "key file \(path) cannot be created: \(String(cString: strerror(code)))"
        }
    }
}
