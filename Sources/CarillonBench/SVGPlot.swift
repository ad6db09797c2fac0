import Foundation

// A small, dependency-free writer of standalone SVG 1.1 charts: line plots with
// linear or log10 axes, and grouped bar charts. The output is meant to be
// committed next to docs/benchmarks.md and read in a browser or on GitHub, so it
// uses only plain SVG 1.1 elements (no CSS, no scripts, no fonts to embed).

// MARK: - Data

/// A point of a ``PlotSeries``, in data coordinates.
public struct PlotPoint: Sendable, Hashable {
    public var x: Double
    public var y: Double

    public init(x: Double, y: Double) {
        self.x = x
        self.y = y
    }
}

/// One named line of a ``LinePlot``.
public struct PlotSeries: Sendable, Hashable {
    /// The legend entry.
    public var name: String
    /// The points, joined in the order given. Points with a NaN or infinite
    /// coordinate, or with a coordinate ≤ 0 on a log axis, are skipped.
    public var points: [PlotPoint]

    public init(name: String, points: [PlotPoint]) {
        self.name = name
        self.points = points
    }

    /// A series from `(x, y)` pairs.
    public init(name: String, coordinates: [(x: Double, y: Double)]) {
        self.init(name: name, points: coordinates.map { PlotPoint(x: $0.x, y: $0.y) })
    }
}

/// How an axis maps values to positions.
public enum PlotAxisScale: Sendable, Hashable {
    /// Evenly spaced values; ticks at "nice" steps (1, 2 or 5 × 10ⁿ).
    case linear
    /// Evenly spaced decades; ticks at powers of ten. Values ≤ 0 are not drawn.
    case log10
}

/// A tick at `value` (data coordinates) labelled `label`.
public struct PlotTick: Sendable, Hashable {
    public var value: Double
    public var label: String

    public init(value: Double, label: String) {
        self.value = value
        self.label = label
    }
}

/// One named set of bars of a ``BarPlot``: one value per group.
public struct BarSeries: Sendable, Hashable {
    /// The legend entry.
    public var name: String
    /// `values[i]` is drawn in group `i`; a missing, NaN or infinite value draws no bar.
    public var values: [Double]

    public init(name: String, values: [Double]) {
        self.name = name
        self.values = values
    }
}

// MARK: - Line plot

/// A line chart written as a standalone SVG 1.1 document.
///
/// The chart has a title, axes with gridlines and tick labels, axis labels and a
/// legend below the plot; each series gets a colour from a fixed
/// colour-blind-safe palette (Okabe–Ito), and dashes once the palette repeats.
public struct LinePlot: Sendable, Hashable {
    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var xScale: PlotAxisScale
    public var yScale: PlotAxisScale
    public var series: [PlotSeries]
    /// Custom ticks for the x axis (value in data coordinates, label). When set,
    /// they replace the automatic ticks and the axis spans both them and the data.
    public var xTickLabels: [PlotTick]?
    /// Whether a dot marks every point. A series of one point is always marked.
    public var showsMarkers: Bool
    /// Whether a linear y axis is extended to include 0.
    public var yIncludesZero: Bool
    /// Width of the document in pixels.
    public var width: Double
    /// Height of the chart without its legend, in pixels; the legend adds one
    /// row of 18 pixels per line of entries below the x-axis label.
    public var height: Double

    public init(
        title: String, xLabel: String, yLabel: String, xScale: PlotAxisScale = .linear, yScale: PlotAxisScale = .linear,
        series: [PlotSeries], xTickLabels: [PlotTick]? = nil, showsMarkers: Bool = true, yIncludesZero: Bool = true,
        width: Double = 800, height: Double = 480
    ) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.xScale = xScale
        self.yScale = yScale
        self.series = series
        self.xTickLabels = xTickLabels
        self.showsMarkers = showsMarkers
        self.yIncludesZero = yIncludesZero
        self.width = width
        self.height = height
    }

    /// The chart as a standalone SVG 1.1 document.
    public func svg() -> String {
        let drawn: [[PlotPoint]] = series.map { $0.points.filter { xScale.accepts($0.x) && yScale.accepts($0.y) } }
        let xs = drawn.flatMap { $0.map(\.x) }
        let ys = drawn.flatMap { $0.map(\.y) }

        let plotTop = title.isEmpty ? 16.0 : 44.0
        let plotHeight = max(height - plotTop - ChartLayout.bottomWithAxisLabel, 60)
        let yAxis = PlotAxis(
            values: ys, scale: yScale, includeZero: yIncludesZero, customTicks: nil,
            targetTickCount: ChartLayout.clamp(Int(plotHeight / 55), 2, 10))
        let left = ChartLayout.leftMargin(tickLabels: yAxis.ticks.map(\.label), hasAxisLabel: !yLabel.isEmpty)

        // Fewer x ticks until their labels fit side by side.
        var plotWidth = max(width - left - 24, 60)
        var target = ChartLayout.clamp(Int(plotWidth / 90), 2, 10)
        var xAxis = PlotAxis(values: xs, scale: xScale, includeZero: false, customTicks: xTickLabels, targetTickCount: target)
        while target > 2, xAxis.scale == .linear, xTickLabels == nil,
            xAxis.ticks.map({ ChartLayout.textWidth($0.label, size: ChartLayout.tickFont) + 16 }).reduce(0, +) > plotWidth
        {
            target -= 1
            xAxis = PlotAxis(values: xs, scale: xScale, includeZero: false, customTicks: nil, targetTickCount: target)
        }
        // Half of the last tick label may stick out on the right.
        if let last = xAxis.ticks.last, xAxis.fraction(last.value) > 0.999 {
            plotWidth = max(width - left - max(24, ChartLayout.textWidth(last.label, size: ChartLayout.tickFont) / 2 + 6), 60)
        }

        let frame = ChartFrame(left: left, top: plotTop, width: plotWidth, height: plotHeight)
        let legend = LegendLayout(
            names: series.map(\.name), swatchWidth: 24, left: left, availableWidth: width - left - 16,
            top: frame.bottom + ChartLayout.bottomWithAxisLabel + 4)
        let documentHeight = frame.bottom + ChartLayout.bottomWithAxisLabel + legend.height + 8

        var canvas = SVGCanvas(width: width, height: documentHeight, title: title)
        canvas.drawTitle(title)
        canvas.drawGrid(frame: frame, xAxis: xAxis, yAxis: yAxis)
        canvas.drawAxes(frame: frame, xAxis: xAxis, yAxis: yAxis, xLabel: xLabel, yLabel: yLabel)
        canvas.addClip(frame: frame)

        for (index, points) in drawn.enumerated() where !points.isEmpty {
            let colour = PlotPalette.colour(index)
            let positions = points.map { (x: frame.x(xAxis.fraction($0.x)), y: frame.y(yAxis.fraction($0.y))) }
            var element = "<g class=\"series\" clip-path=\"url(#plot-area)\"><title>\(xmlEscaped(series[index].name))</title>"
            let coordinates = positions.map { "\(svgNumber($0.x)),\(svgNumber($0.y))" }.joined(separator: " ")
            element += "<polyline class=\"series-line\" points=\"\(coordinates)\" fill=\"none\" stroke=\"\(colour)\""
            element += " stroke-width=\"2\" stroke-linejoin=\"round\" stroke-linecap=\"round\""
            if let dash = PlotPalette.dash(index) { element += " stroke-dasharray=\"\(dash)\"" }
            element += "/>"
            if showsMarkers || positions.count == 1 {
                for position in positions {
                    element += "<circle cx=\"\(svgNumber(position.x))\" cy=\"\(svgNumber(position.y))\" r=\"3\" fill=\"\(colour)\"/>"
                }
            }
            element += "</g>"
            canvas.add(element)
        }
        if xs.isEmpty { canvas.drawNoData(frame: frame) }

        for placement in legend.placements {
            let colour = PlotPalette.colour(placement.index)
            let y = placement.y
            var swatch = "<line x1=\"\(svgNumber(placement.x))\" y1=\"\(svgNumber(y))\" x2=\"\(svgNumber(placement.x + 24))\""
            swatch += " y2=\"\(svgNumber(y))\" stroke=\"\(colour)\" stroke-width=\"2\""
            if let dash = PlotPalette.dash(placement.index) { swatch += " stroke-dasharray=\"\(dash)\"" }
            swatch += "/>"
            if showsMarkers { swatch += "<circle cx=\"\(svgNumber(placement.x + 12))\" cy=\"\(svgNumber(y))\" r=\"3\" fill=\"\(colour)\"/>" }
            canvas.add("<g class=\"legend-entry\">\(swatch)")
            canvas.text(placement.text, x: placement.x + 30, y: y + 4, size: ChartLayout.legendFont, anchor: "start", cls: "legend")
            canvas.add("</g>")
        }
        return canvas.document()
    }
}

// MARK: - Bar plot

/// A grouped bar chart written as a standalone SVG 1.1 document: one cluster
/// of bars per group (x category), one bar per series in each cluster, each bar
/// labelled with its value.
public struct BarPlot: Sendable, Hashable {
    public var title: String
    public var yLabel: String
    /// The x categories, left to right.
    public var groups: [String]
    /// One colour each; `series[s].values[g]` is the bar of series `s` in group `g`.
    public var series: [BarSeries]
    /// Whether each bar carries its value as text.
    public var showsValueLabels: Bool
    /// Width of the document in pixels.
    public var width: Double
    /// Height of the chart without its legend, in pixels.
    public var height: Double

    public init(
        title: String, yLabel: String, groups: [String], series: [BarSeries], showsValueLabels: Bool = true,
        width: Double = 800, height: Double = 480
    ) {
        self.title = title
        self.yLabel = yLabel
        self.groups = groups
        self.series = series
        self.showsValueLabels = showsValueLabels
        self.width = width
        self.height = height
    }

    /// The chart as a standalone SVG 1.1 document.
    public func svg() -> String {
        func value(_ s: Int, _ g: Int) -> Double? {
            guard g < series[s].values.count, series[s].values[g].isFinite else { return nil }
            return series[s].values[g]
        }
        let values = series.indices.flatMap { s in groups.indices.compactMap { g in value(s, g) } }

        let plotTop = title.isEmpty ? 16.0 : 44.0
        // Width of one cluster and one bar, known before the y axis (the y tick labels
        // change the left margin only a little, so estimate with a typical margin).
        let estimatedWidth = max(width - 80 - 24, 60)
        let estimatedBar = estimatedWidth / Double(max(groups.count, 1)) * 0.8 / Double(max(series.count, 1))
        let valueLabels = values.map(PlotNumber.value)
        let widestValue = valueLabels.map { ChartLayout.textWidth($0, size: ChartLayout.valueFont) }.max() ?? 0
        let rotateValues = widestValue > estimatedBar * 0.9 + 2

        let widestGroup = groups.map { ChartLayout.textWidth($0, size: ChartLayout.tickFont) }.max() ?? 0
        let rotateGroups = widestGroup > estimatedWidth / Double(max(groups.count, 1)) - 6
        let groupLabelRoom = rotateGroups ? 14 + widestGroup * 0.5 + 8 : 24.0
        let plotHeight = max(height - plotTop - groupLabelRoom - 8, 60)

        // Leave room above the tallest bar (and below the lowest negative one) for its label.
        let labelRoom = showsValueLabels ? (rotateValues ? widestValue + 8 : 14) : 0
        let high = max(values.max() ?? 1, 0)
        let low = min(values.min() ?? 0, 0)
        let usable = max(plotHeight - labelRoom * (low < 0 ? 2 : 1), 20)
        let unitsPerPixel = (high - low) / usable
        let yAxis = PlotAxis(
            values: [low - (low < 0 ? labelRoom * unitsPerPixel : 0), high + labelRoom * unitsPerPixel], scale: .linear,
            includeZero: true, customTicks: nil, targetTickCount: ChartLayout.clamp(Int(plotHeight / 55), 2, 10))
        let left = ChartLayout.leftMargin(tickLabels: yAxis.ticks.map(\.label), hasAxisLabel: !yLabel.isEmpty)
        let frame = ChartFrame(left: left, top: plotTop, width: max(width - left - 24, 60), height: plotHeight)

        let legend = LegendLayout(
            names: series.map(\.name), swatchWidth: 12, left: left, availableWidth: width - left - 16,
            top: frame.bottom + groupLabelRoom + 12)
        let documentHeight = frame.bottom + groupLabelRoom + 8 + legend.height + 8

        var canvas = SVGCanvas(width: width, height: documentHeight, title: title)
        canvas.drawTitle(title)
        canvas.drawGrid(frame: frame, xAxis: nil, yAxis: yAxis)
        canvas.drawAxes(frame: frame, xAxis: nil, yAxis: yAxis, xLabel: "", yLabel: yLabel)

        let groupWidth = frame.width / Double(max(groups.count, 1))
        let barSlot = groupWidth * 0.8 / Double(max(series.count, 1))
        let zero = frame.y(yAxis.fraction(0))
        for (g, group) in groups.enumerated() {
            let centre = frame.left + (Double(g) + 0.5) * groupWidth
            let labelY = frame.bottom + 18
            if rotateGroups {
                canvas.text(
                    group, x: centre, y: labelY, size: ChartLayout.tickFont, anchor: "end", rotate: -30, cls: "tick-x")
            } else {
                canvas.text(group, x: centre, y: labelY, size: ChartLayout.tickFont, anchor: "middle", cls: "tick-x")
            }
            for s in series.indices {
                guard let v = value(s, g) else { continue }
                let x = frame.left + Double(g) * groupWidth + groupWidth * 0.1 + Double(s) * barSlot + barSlot * 0.05
                let top = frame.y(yAxis.fraction(v))
                let barTop = min(top, zero)
                var bar = "<rect class=\"bar\" x=\"\(svgNumber(x))\" y=\"\(svgNumber(barTop))\" width=\"\(svgNumber(barSlot * 0.9))\""
                bar += " height=\"\(svgNumber(abs(zero - top)))\" fill=\"\(PlotPalette.colour(s))\">"
                bar += "<title>\(xmlEscaped("\(series[s].name), \(group): \(PlotNumber.value(v))"))</title></rect>"
                canvas.add(bar)
                guard showsValueLabels else { continue }
                let cx = x + barSlot * 0.45
                let label = PlotNumber.value(v)
                if rotateValues {
                    let y = v >= 0 ? top - 4 : top + 4
                    canvas.text(
                        label, x: cx + 3.5, y: y, size: ChartLayout.valueFont, anchor: v >= 0 ? "start" : "end", rotate: -90,
                        cls: "value")
                } else {
                    canvas.text(
                        label, x: cx, y: v >= 0 ? top - 4 : top + 12, size: ChartLayout.valueFont, anchor: "middle", cls: "value")
                }
            }
        }
        if values.isEmpty { canvas.drawNoData(frame: frame) }

        for placement in legend.placements {
            let y = placement.y
            var swatch = "<g class=\"legend-entry\"><rect x=\"\(svgNumber(placement.x))\" y=\"\(svgNumber(y - 6))\""
            swatch += " width=\"12\" height=\"12\" fill=\"\(PlotPalette.colour(placement.index))\"/>"
            canvas.add(swatch)
            canvas.text(placement.text, x: placement.x + 18, y: y + 4, size: ChartLayout.legendFont, anchor: "start", cls: "legend")
            canvas.add("</g>")
        }
        return canvas.document()
    }
}

// MARK: - Axes

extension PlotAxisScale {
    /// Whether `value` can be drawn on an axis of this scale.
    func accepts(_ value: Double) -> Bool { value.isFinite && (self == .linear || value > 0) }

    /// Value → position space (log10 of the value on a log axis).
    func transform(_ value: Double) -> Double { self == .linear ? value : decimalLogarithm(value) }
}

private func decimalLogarithm(_ value: Double) -> Double { log10(value) }

/// An axis: its domain (in transformed space), its labelled ticks and, on a log
/// axis, unlabelled minor ticks (2…9 × 10ⁿ) for light gridlines.
struct PlotAxis {
    let scale: PlotAxisScale
    let lower: Double
    let upper: Double
    let ticks: [PlotTick]
    let minorTicks: [Double]

    /// An axis spanning `values` (already filtered by `scale.accepts`).
    init(values: [Double], scale: PlotAxisScale, includeZero: Bool, customTicks: [PlotTick]?, targetTickCount: Int) {
        self.scale = scale
        let values = values.filter(scale.accepts)
        let custom = (customTicks ?? []).filter { scale.accepts($0.value) }
        if !custom.isEmpty {
            let span = (values + custom.map(\.value)).map(scale.transform)
            var lower = span.min()!
            var upper = span.max()!
            if lower == upper {
                lower -= 0.5
                upper += 0.5
            }
            (self.lower, self.upper, ticks, minorTicks) = (lower, upper, custom.sorted { $0.value < $1.value }, [])
            return
        }
        switch scale {
        case .linear:
            let ticks = PlotAxis.linearTicks(
                min: includeZero ? min(values.min() ?? 0, 0) : values.min() ?? 0,
                max: includeZero ? max(values.max() ?? 1, 0) : values.max() ?? 1, targetCount: targetTickCount)
            self.ticks = ticks
            lower = ticks.first!.value
            upper = ticks.last!.value
            minorTicks = []
        case .log10:
            let decades = PlotAxis.decades(min: values.min(), max: values.max())
            lower = Double(decades.lowerBound)
            upper = Double(decades.upperBound)
            let step = max(1, Int((Double(decades.count - 1) / 8).rounded(.up)))
            ticks = stride(from: decades.lowerBound, through: decades.upperBound, by: step).map {
                PlotTick(value: pow(10, Double($0)), label: PlotNumber.decade($0))
            }
            minorTicks =
                decades.count > 7
                ? []
                : decades.dropLast().flatMap { k in (2...9).map { Double($0) * pow(10, Double(k)) } }
        }
    }

    /// Where `value` lies along the axis: 0 at the lower end, 1 at the upper.
    func fraction(_ value: Double) -> Double { (scale.transform(value) - lower) / (upper - lower) }

    /// "Nice" ticks (steps of 1, 2 or 5 × 10ⁿ) covering `min…max`, about `targetCount` of them.
    static func linearTicks(min: Double, max: Double, targetCount: Int) -> [PlotTick] {
        var low = min
        var high = max
        if low == high {
            if low == 0 {
                high = 1
            } else {
                let pad = abs(low) * 0.1
                low -= pad
                high += pad
            }
        }
        let rough = (high - low) / Double(Swift.max(targetCount - 1, 1))
        let magnitude = pow(10, (decimalLogarithm(rough)).rounded(.down))
        let residual = rough / magnitude
        let step = (residual <= 1 ? 1 : residual <= 2 ? 2 : residual <= 5 ? 5 : 10) * magnitude
        // The tolerance absorbs rounding (0.3 / 0.1 = 2.9999999999999996).
        let first = (low / step + 1e-9).rounded(.down)
        let last = (high / step - 1e-9).rounded(.up)
        let decimals = Swift.max(0, -Int((decimalLogarithm(step) + 1e-9).rounded(.down)))
        let count = Int((last - first).rounded())
        return (0...count).map { i in
            var value = (first + Double(i)) * step
            if abs(value) < step * 1e-9 { value = 0 }
            return PlotTick(value: value, label: PlotNumber.fixed(value, decimals: decimals))
        }
    }

    /// The powers of ten (exponents) enclosing `min…max`; at least one decade.
    static func decades(min: Double?, max: Double?) -> ClosedRange<Int> {
        guard let min, let max, min > 0, max > 0 else { return 0...1 }
        let low = Int((decimalLogarithm(min) + 1e-9).rounded(.down))
        let high = Int((decimalLogarithm(max) - 1e-9).rounded(.up))
        return high > low ? low...high : (low - 1)...(low + 1)
    }
}

// MARK: - Layout

/// The plotting area, in document pixels.
struct ChartFrame {
    let left: Double
    let top: Double
    let width: Double
    let height: Double

    var right: Double { left + width }
    var bottom: Double { top + height }
    func x(_ fraction: Double) -> Double { left + fraction * width }
    func y(_ fraction: Double) -> Double { bottom - fraction * height }
}

enum ChartLayout {
    static let titleFont = 16.0
    static let labelFont = 13.0
    static let tickFont = 11.0
    static let legendFont = 12.0
    static let valueFont = 10.0
    /// Below the plot: x tick labels and the x-axis label.
    static let bottomWithAxisLabel = 48.0

    /// A generous estimate of the width of `text` in a sans-serif font.
    static func textWidth(_ text: String, size: Double) -> Double { Double(text.count) * size * 0.6 }

    static func clamp(_ value: Int, _ low: Int, _ high: Int) -> Int { min(max(value, low), high) }

    /// Room for the rotated y-axis label and the widest y tick label.
    static func leftMargin(tickLabels: [String], hasAxisLabel: Bool) -> Double {
        let widest = tickLabels.map { textWidth($0, size: tickFont) }.max() ?? 0
        return max(12 + (hasAxisLabel ? 20 : 0) + widest + 12, 48)
    }
}

/// Legend entries flowed left to right, wrapping onto new rows.
struct LegendLayout {
    struct Placement {
        let index: Int
        let text: String
        let x: Double
        let y: Double
    }

    static let rowHeight = 18.0
    private(set) var placements: [Placement] = []
    private(set) var rows = 0

    var height: Double { Double(rows) * LegendLayout.rowHeight }

    init(names: [String], swatchWidth: Double, left: Double, availableWidth: Double, top: Double) {
        var x = left
        var row = 0
        let textRoom = max(availableWidth - swatchWidth - 6, 40)
        for (index, name) in names.enumerated() {
            var text = name
            let maxCharacters = Int(textRoom / (ChartLayout.legendFont * 0.6))
            if text.count > maxCharacters { text = String(text.prefix(max(maxCharacters - 1, 1))) + "…" }
            let entryWidth = swatchWidth + 6 + ChartLayout.textWidth(text, size: ChartLayout.legendFont) + 20
            if x > left, x + entryWidth > left + availableWidth {
                row += 1
                x = left
            }
            placements.append(Placement(index: index, text: text, x: x, y: top + (Double(row) + 0.5) * LegendLayout.rowHeight))
            x += entryWidth
        }
        rows = names.isEmpty ? 0 : row + 1
    }
}

/// A fixed colour-blind-safe palette (Okabe & Ito), then dashes once it repeats.
enum PlotPalette {
    static let colours = ["#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#000000", "#8C8C8C"]
    static let dashes = ["7 4", "2 3", "9 3 2 3"]

    static func colour(_ index: Int) -> String { colours[index % colours.count] }

    static func dash(_ index: Int) -> String? {
        let round = index / colours.count
        return round == 0 ? nil : dashes[(round - 1) % dashes.count]
    }
}

// MARK: - Text

/// Number formatting for tick and value labels (locale-independent).
enum PlotNumber {
    /// `value` with `decimals` decimals and thousands separators, e.g. `12,345.6`.
    static func fixed(_ value: Double, decimals: Int, grouping: Bool = true) -> String {
        guard value.isFinite else { return value.isNaN ? "NaN" : (value > 0 ? "∞" : "-∞") }
        var text = String(format: "%.\(max(decimals, 0))f", value)
        if text.hasPrefix("-"), Double(text) == 0 { text.removeFirst() }
        guard grouping else { return text }
        let negative = text.hasPrefix("-")
        if negative { text.removeFirst() }
        let parts = text.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        var digits = Array(parts[0])
        var grouped = ""
        while digits.count > 3 {
            grouped = "," + String(digits.suffix(3)) + grouped
            digits.removeLast(3)
        }
        grouped = String(digits) + grouped
        return (negative ? "-" : "") + grouped + (parts.count > 1 ? "." + parts[1] : "")
    }

    /// `value` with at most `maxDecimals` decimals, trailing zeros removed, no grouping: `12.5`, `3`.
    static func trimmed(_ value: Double, maxDecimals: Int) -> String {
        var text = fixed(value, decimals: maxDecimals, grouping: false)
        if text.contains(".") {
            while text.hasSuffix("0") { text.removeLast() }
            if text.hasSuffix(".") { text.removeLast() }
        }
        return text == "-0" ? "0" : text
    }

    /// A label for a bar's value: whole numbers from 1,000 up, one decimal below.
    static func value(_ value: Double) -> String {
        if abs(value) >= 999.95 { return fixed(value, decimals: 0) }
        if abs(value) >= 1 || value == 0 { return fixed(value, decimals: 1) }
        return trimmed(value, maxDecimals: 3)
    }

    /// The label of the decade 10^`exponent`: `0.01`, `1`, `1,000`, `1e9`.
    static func decade(_ exponent: Int) -> String {
        switch exponent {
        case -3..<0: return fixed(pow(10, Double(exponent)), decimals: -exponent)
        case 0...6: return fixed(pow(10, Double(exponent)), decimals: 0)
        default: return "1e\(exponent)"
        }
    }
}

/// `text` safe inside an XML element or a quoted attribute: the five special
/// characters become entities and control characters XML 1.0 forbids become spaces.
func xmlEscaped(_ text: String) -> String {
    var result = ""
    result.reserveCapacity(text.utf8.count)
    for scalar in text.unicodeScalars {
        switch scalar {
        case "&": result += "&amp;"
        case "<": result += "&lt;"
        case ">": result += "&gt;"
        case "\"": result += "&quot;"
        case "'": result += "&apos;"
        case "\t", "\n", "\r": result.unicodeScalars.append(scalar)
        default:
            if scalar.value < 0x20 || scalar.value == 0xFFFE || scalar.value == 0xFFFF {
                result += " "
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
    }
    return result
}

/// A coordinate: at most two decimals.
func svgNumber(_ value: Double) -> String { PlotNumber.trimmed(value, maxDecimals: 2) }

// MARK: - Document

/// Accumulates the elements of one SVG document.
struct SVGCanvas {
    let width: Double
    let height: Double
    let title: String
    private var elements: [String] = []

    init(width: Double, height: Double, title: String) {
        self.width = width
        self.height = height
        self.title = title
        elements.append("<rect class=\"background\" x=\"0\" y=\"0\" width=\"\(svgNumber(width))\" height=\"\(svgNumber(height))\" fill=\"#FFFFFF\"/>")
    }

    mutating func add(_ element: String) { elements.append(element) }

    mutating func text(
        _ text: String, x: Double, y: Double, size: Double, anchor: String, rotate: Double? = nil, bold: Bool = false,
        cls: String, fill: String = "#222222"
    ) {
        var element = "<text class=\"\(cls)\" x=\"\(svgNumber(x))\" y=\"\(svgNumber(y))\" font-size=\"\(svgNumber(size))\""
        element += " text-anchor=\"\(anchor)\" fill=\"\(fill)\""
        if bold { element += " font-weight=\"bold\"" }
        if let rotate { element += " transform=\"rotate(\(svgNumber(rotate)) \(svgNumber(x)) \(svgNumber(y)))\"" }
        element += ">\(xmlEscaped(text))</text>"
        elements.append(element)
    }

    mutating func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double, stroke: String, width: Double = 1, cls: String) {
        elements.append(
            "<line class=\"\(cls)\" x1=\"\(svgNumber(x1))\" y1=\"\(svgNumber(y1))\" x2=\"\(svgNumber(x2))\" y2=\"\(svgNumber(y2))\" stroke=\"\(stroke)\" stroke-width=\"\(svgNumber(width))\"/>"
        )
    }

    mutating func drawTitle(_ title: String) {
        guard !title.isEmpty else { return }
        text(title, x: width / 2, y: 26, size: ChartLayout.titleFont, anchor: "middle", bold: true, cls: "title")
    }

    /// The clip path that keeps series inside the plotting area.
    mutating func addClip(frame: ChartFrame) {
        elements.append(
            "<defs><clipPath id=\"plot-area\"><rect x=\"\(svgNumber(frame.left - 4))\" y=\"\(svgNumber(frame.top - 4))\" width=\"\(svgNumber(frame.width + 8))\" height=\"\(svgNumber(frame.height + 8))\"/></clipPath></defs>"
        )
    }

    /// Gridlines: light for minor ticks, a little darker for labelled ticks.
    mutating func drawGrid(frame: ChartFrame, xAxis: PlotAxis?, yAxis: PlotAxis) {
        func inside(_ fraction: Double) -> Bool { fraction > -1e-9 && fraction < 1 + 1e-9 }
        for value in yAxis.minorTicks where inside(yAxis.fraction(value)) {
            let y = frame.y(yAxis.fraction(value))
            line(frame.left, y, frame.right, y, stroke: "#F0F0F0", cls: "grid-minor")
        }
        for tick in yAxis.ticks where inside(yAxis.fraction(tick.value)) {
            let y = frame.y(yAxis.fraction(tick.value))
            line(frame.left, y, frame.right, y, stroke: "#DDDDDD", cls: "grid")
        }
        guard let xAxis else { return }
        for value in xAxis.minorTicks where inside(xAxis.fraction(value)) {
            let x = frame.x(xAxis.fraction(value))
            line(x, frame.top, x, frame.bottom, stroke: "#F0F0F0", cls: "grid-minor")
        }
        for tick in xAxis.ticks where inside(xAxis.fraction(tick.value)) {
            let x = frame.x(xAxis.fraction(tick.value))
            line(x, frame.top, x, frame.bottom, stroke: "#DDDDDD", cls: "grid")
        }
    }

    /// The axis lines, tick marks, tick labels and axis labels.
    mutating func drawAxes(frame: ChartFrame, xAxis: PlotAxis?, yAxis: PlotAxis, xLabel: String, yLabel: String) {
        line(frame.left, frame.top, frame.left, frame.bottom, stroke: "#333333", cls: "axis")
        line(frame.left, frame.bottom, frame.right, frame.bottom, stroke: "#333333", cls: "axis")
        for tick in yAxis.ticks {
            let fraction = yAxis.fraction(tick.value)
            guard fraction > -1e-9, fraction < 1 + 1e-9 else { continue }
            let y = frame.y(fraction)
            line(frame.left - 5, y, frame.left, y, stroke: "#333333", cls: "tick")
            text(tick.label, x: frame.left - 8, y: y + 4, size: ChartLayout.tickFont, anchor: "end", cls: "tick-y")
        }
        if let xAxis {
            for tick in xAxis.ticks {
                let fraction = xAxis.fraction(tick.value)
                guard fraction > -1e-9, fraction < 1 + 1e-9 else { continue }
                let x = frame.x(fraction)
                line(x, frame.bottom, x, frame.bottom + 5, stroke: "#333333", cls: "tick")
                text(tick.label, x: x, y: frame.bottom + 18, size: ChartLayout.tickFont, anchor: "middle", cls: "tick-x")
            }
        }
        if !xLabel.isEmpty {
            text(
                xLabel, x: frame.left + frame.width / 2, y: frame.bottom + 40, size: ChartLayout.labelFont, anchor: "middle",
                cls: "axis-label")
        }
        if !yLabel.isEmpty {
            text(
                yLabel, x: 18, y: frame.top + frame.height / 2, size: ChartLayout.labelFont, anchor: "middle", rotate: -90,
                cls: "axis-label")
        }
    }

    mutating func drawNoData(frame: ChartFrame) {
        text(
            "No data", x: frame.left + frame.width / 2, y: frame.top + frame.height / 2, size: ChartLayout.labelFont,
            anchor: "middle", cls: "no-data", fill: "#888888")
    }

    /// The complete document.
    func document() -> String {
        var out = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n"
        out += "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"\(svgNumber(width))\" height=\"\(svgNumber(height))\""
        out += " viewBox=\"0 0 \(svgNumber(width)) \(svgNumber(height))\" font-family=\"Helvetica, Arial, sans-serif\">\n"
        if !title.isEmpty { out += "<title>\(xmlEscaped(title))</title>\n" }
        for element in elements { out += element + "\n" }
        out += "</svg>\n"
        return out
    }
}
