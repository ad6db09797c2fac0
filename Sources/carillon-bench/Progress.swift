import Dispatch
import Foundation
import Synchronization

/// A progress line on standard error: step k of n, what runs, elapsed time and
/// an estimate of what is left. Redrawn twice a second on a terminal; one line
/// per step otherwise (logs stay readable).
final class ProgressBar: @unchecked Sendable {
    private let total: Int
    private let scenario: String
    private let state = Mutex<(step: Int, label: String, stepStarted: Date)>((0, "", Date()))
    private let started = Date()
    private let terminal = isatty(STDERR_FILENO) != 0
    private var timer: DispatchSourceTimer?

    init(scenario: String, steps: Int) {
        self.scenario = scenario
        total = max(steps, 1)
        if terminal {
            let timer = DispatchSource.makeTimerSource(queue: .global())
            timer.schedule(deadline: .now() + 0.5, repeating: 0.5)
            timer.setEventHandler { [weak self] in self?.draw() }
            timer.resume()
            self.timer = timer
        }
    }

    /// Starts step `step` (from 1).
    func begin(_ step: Int, _ label: String) {
        state.withLock { $0 = (step, label, Date()) }
        if terminal {
            draw()
        } else {
            FileHandle.standardError.write(Data("[\(scenario) \(step)/\(total)] \(label) (\(eta()))\n".utf8))
        }
    }

    /// A line of result under the bar.
    func report(_ line: String) {
        FileHandle.standardError.write(Data(((terminal ? "\r\u{1B}[K" : "") + "  " + line + "\n").utf8))
        if terminal { draw() }
    }

    func finish() {
        timer?.cancel()
        timer = nil
        let seconds = Int(Date().timeIntervalSince(started))
        FileHandle.standardError.write(Data(((terminal ? "\r\u{1B}[K" : "") + "[\(scenario)] \(total) steps in \(seconds) s\n").utf8))
    }

    private func eta() -> String {
        let (step, _, _) = state.withLock { $0 }
        let elapsed = Date().timeIntervalSince(started)
        guard step > 1 else { return "\(Int(elapsed)) s elapsed" }
        let perStep = elapsed / Double(step - 1)
        return "\(Int(elapsed)) s elapsed, about \(Int(perStep * Double(total - step + 1))) s left"
    }

    private func draw() {
        let (step, label, stepStarted) = state.withLock { $0 }
        let width = 24
        let done = Int(Double(width) * Double(max(step - 1, 0)) / Double(total))
        let bar = String(repeating: "#", count: done) + String(repeating: ".", count: width - done)
        let line = "\r\u{1B}[K[\(bar)] \(scenario) \(step)/\(total) \(label) — step \(Int(Date().timeIntervalSince(stepStarted))) s, \(eta())"
        FileHandle.standardError.write(Data(line.utf8))
    }
}
