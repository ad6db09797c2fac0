import Foundation
import Testing

extension NamespaceTests {
    /// The services with separate `carillon node` processes in namespaces, as
    /// a user runs them: `carillon lock` on every host contending for one lock
    /// while the holder's node is killed with kill -9 (the next waiter gets it
    /// with a larger token, grants never overlap), `carillon kv add` from every
    /// host summing exactly, and a joiner catching up on a store larger than
    /// the membership layer's inline state transfer (over the bulk channel). Values of
    /// 512 B: a command must fit one bus message, which is smaller with more members.
    @Suite("Namespace services (locks, objects; separate processes)")
    struct NamespaceServicesTests {
        func run(members: Int, keys: Int) throws -> (status: Int32, output: String) {
            let binary = try releaseCarillon()
            return try runScript(
                "tools/netns-services.sh",
                [
                    "--members", "\(members)", "--keys", "\(keys)", "--bytes", "512", "--bin", binary
                ])
        }

        func expectAllChecks(_ status: Int32, _ output: String, members: Int, keys: Int) {
            #expect(status == 0, "\(output)")
            #expect(output.contains("OK — next grant"), "\(output)")
            #expect(output.contains("none overlapping except lost ones; the killed holder's CLI exited 75"), "\(output)")
            #expect(output.contains("OK — counter: \(members) hosts × 20 adds = \(members * 20) at every host"), "\(output)")
            #expect(output.contains("holds the same \(keys) keys"), "\(output)")
        }

        @Test func threeMembers() throws {
            let (status, output) = try run(members: 3, keys: 2000)
            expectAllChecks(status, output, members: 3, keys: 2000)
        }

        @Test func fiveMembers() throws {
            let (status, output) = try run(members: 5, keys: 2000)
            expectAllChecks(status, output, members: 5, keys: 2000)
        }

        /// A 64 MiB owned object migrates back and forth between hosts while a
        /// client writes to it; one migration's target is killed (kill -9)
        /// during the transfer and must abort; every acknowledged write reads
        /// back; `carillon verify` agrees on the nodes' logs.
        @Test func aLargeObjectMigratesBetweenHostsThroughAKilledTarget() throws {
            let binary = try releaseCarillon()
            let (status, output) = try runScript("tools/netns-migration.sh", ["--size", "64MiB", "--bin", binary])
            #expect(status == 0, "\(output)")
            #expect(output.contains("OK — h0 -> h1"), "\(output)")
            #expect(output.contains("the migration aborted"), "\(output)")
            #expect(output.contains("acknowledged writes read back after 4 migrations"), "\(output)")
            #expect(output.contains("OK — carillon verify"), "\(output)")
        }
    }
}
