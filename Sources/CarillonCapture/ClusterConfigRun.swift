import CarillonAuth
import Foundation

/// What carillon-tap takes from a cluster's JSON configuration
/// (docs/configuration.md): the run identity its slot and repair frames are
/// sealed under, and where its cluster key is.
///
/// Only these fields are read; `carillon node` reads and checks the whole file
/// (`Sources/carillon/ConfigFile.swift`, an executable target this library
/// cannot depend on). The run identity must come out exactly as the node's
/// does, so `start_at_ns` is converted the way `ConfigFile` converts it: a
/// JSON number in 0...1.8e19, through `Double` (a start time above 2^53 is
/// therefore rounded, to a multiple of 256 ns, by the node and here alike),
/// and the run is `max(start_at_ns, 1)` as in `MemberConfiguration`.
public struct ClusterConfigRun: Sendable, Hashable {
    /// `start_at_ns` as `carillon node` reads it (0 when the file has none).
    public var startAtNanos: UInt64
    /// The run identity the cluster's first view is started with: slot and
    /// repair frames are sealed under the cluster key bound to it.
    public var runIdentity: UInt64 { max(startAtNanos, 1) }
    /// The key file named by `"authentication": {"key_file": …}`, resolved
    /// against the configuration file's directory; nil when authentication is `"off"`.
    public var keyFilePath: String?

    public init(startAtNanos: UInt64, keyFilePath: String? = nil) {
        self.startAtNanos = startAtNanos
        self.keyFilePath = keyFilePath
    }

    /// Parses the file's bytes; `path` names it in errors and resolves a relative key file.
    public init(json data: Data, path: String) throws(ClusterConfigError) {
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data) } catch {
            throw ClusterConfigError(path: path, key: nil, problem: "is not valid JSON (\(error.localizedDescription))")
        }
        guard let root = object as? [String: Any] else {
            throw ClusterConfigError(path: path, key: nil, problem: "must be a JSON object (a cluster configuration)")
        }
        startAtNanos = 0
        if let value = root["start_at_ns"] {
            // As ConfigFile: the value goes through Double. JSON true/false must
            // not pass as 1/0: on Linux they come back as NSNumber (type
            // __NSCFBoolean, objCType "c", which no JSON number has), not Bool.
            guard type(of: value) != Bool.self, let n = value as? NSNumber, String(cString: n.objCType) != "c",
                (0...1.8e19).contains(n.doubleValue)
            else {
                throw ClusterConfigError(path: path, key: "start_at_ns", problem: "must be a number in 0.0...1.8e+19")
            }
            startAtNanos = UInt64(n.doubleValue)
        }
        switch root["authentication"] {
        case let object as [String: Any]:
            guard let file = object["key_file"] as? String else {
                throw ClusterConfigError(path: path, key: "authentication", problem: "must be \"off\" or {\"key_file\": \"path\"}")
            }
            keyFilePath = file.hasPrefix("/") ? file : URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent(file).path
        default:
            keyFilePath = nil
        }
    }

    /// Reads the configuration file at `path`.
    public static func load(path: String) throws(ClusterConfigError) -> ClusterConfigRun {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ClusterConfigError(path: path, key: nil, problem: "cannot be read (does it exist?)")
        }
        return try ClusterConfigRun(json: data, path: path)
    }

    /// The cluster key the file names (through ``KeyFile``, which refuses a
    /// key file others can read), or nil when it says `"authentication": "off"`.
    public func loadKey() throws(KeyFileError) -> FrameAuthenticator? {
        guard let keyFilePath else { return nil }
        return try KeyFile.load(path: keyFilePath)
    }
}

/// A configuration file carillon-tap cannot use: the file, the key, and what is wrong.
public struct ClusterConfigError: Error, Sendable, CustomStringConvertible {
    public var path: String
    public var key: String?
    public var problem: String
    public var description: String { key.map { "\(path): key \"\($0)\" \(problem)" } ?? "\(path) \(problem)" }
}
